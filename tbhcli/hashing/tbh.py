"""Twin-Bottleneck Hashing (Shen et al., CVPR 2020), top to bottom like the paper.

features x [B, D] -> shared layer -> binary bottleneck b [B, M] (stochastic binary neuron, Eq. 3/8)
                                  -> continuous bottleneck z [B, L]
code-driven graph A from b (Eq. 4) -> GCN z' = sigmoid(Lap(A) (z W + c)) (Eq. 5) -> decoder x_hat
adversarial regularisers d_b(b), d_z(z') against Bernoulli(0.5) and U(0, 1) priors (Eq. 7, 9).

Defaults follow the authors' released code; `TBHConfig.preset("paper")` gives the paper's figure.
Every difference between the two is one explicit config field. At inference only the *sign
encoder* is used: code = [logit > 0] (no graph, no decoder, no randomness).
See docs/model.md for every choice and TBH_METHOD.md for the spec.
"""

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

VARIANTS = ("code", "paper")


@dataclass
class TBHConfig:
    """Every setting of the network; `asdict` of it is stored as a run's `config["model"]`."""

    feature_dim: int = 1280  # D
    bits: int = 32  # M
    hidden_dim: int = 1024  # H, shared encoder layer and decoder hidden layer
    continuous_dim: int = 512  # L
    # paper-vs-code differences (the code's choice is the default)
    continuous_activation: str = "sigmoid"  # code: sigmoid | paper: relu
    decoder_output: str = "relu"  # relu (features >= 0) | identity (paper, signed features)
    discriminator: str = "linear"  # code: linear | paper: mlp (Linear(., 1024) + ReLU + Linear)
    discriminator_hidden: int = 1024
    neuron_eps: str = "fixed"  # code: fixed (eps = 0.5) | paper: random (eps ~ U(0, 1))
    gamma: float = 1.4  # code: 1.4 | paper: 1.0 (Eq. 4 exponent)
    adversarial_form: str = "saturating"  # saturating minimax | non_saturating (older code)
    adversarial_weight: float = 1.0  # lambda of Eq. 9
    # ablations of the paper (Sec. 4.4); all True/False here means the full model
    single_bottleneck: bool = False  # decoder reads b directly: no z, no graph, no d_z
    fixed_graph: bool = False  # A from the batch features (cosine); the decoder reads [b, z']
    stochastic_neuron: bool = True  # False: b = [logit > 0] with a plain straight-through grad

    @staticmethod
    def preset(variant: str, **fields) -> "TBHConfig":
        """The released code's settings ("code") or the paper's figure ("paper"), then `fields`."""
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        cfg = TBHConfig(**fields)
        if variant == "paper":
            paper = dict(
                continuous_activation="relu",
                decoder_output="identity",
                discriminator="mlp",
                neuron_eps="random",
                gamma=1.0,
            )
            cfg = replace(cfg, **{k: v for k, v in paper.items() if k not in fields})
        return cfg


def glorot_(module: nn.Module) -> nn.Module:
    """Keras defaults, as in the reference: Glorot-uniform weights, zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    return module


# ---- stochastic binary neuron (Eq. 3 forward, Eq. 8 gradient) ---------------------------------


class StochasticBinaryNeuron(torch.autograd.Function):
    """b = [sigmoid(logit) > eps]; d logit = p (1 - p) (dL/db + dL/dp), eps gets no gradient.

    Returns (b, p), both [B, M]. The straight-through gradient through the sigmoid is the paper's
    "distributional derivative" (Eq. 8); p is returned so the dL/dp term of the formula is real.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, eps: torch.Tensor):
        p = torch.sigmoid(logits)
        ctx.save_for_backward(p)
        return (p > eps).to(logits.dtype), p

    @staticmethod
    def backward(ctx, grad_b: torch.Tensor, grad_p: torch.Tensor):
        (p,) = ctx.saved_tensors
        return p * (1 - p) * (grad_b + grad_p), None


class StraightThroughSign(torch.autograd.Function):
    """Ablation "without stochastic neuron": b = [logit > 0], d logit = dL/db (identity STE)."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor):
        return (logits > 0).to(logits.dtype)

    @staticmethod
    def backward(ctx, grad_b: torch.Tensor):
        return grad_b


# ---- code-driven graph (Eq. 4) and graph convolution (Eq. 5) ----------------------------------


def hamming(b: torch.Tensor) -> torch.Tensor:
    """Pairwise Hamming distances of {0,1} codes [N, M] -> [N, N], differentiable in b."""
    return b @ (1 - b).T + (1 - b) @ b.T


def code_graph(b: torch.Tensor, gamma: float) -> torch.Tensor:
    """Eq. 4: A = (1 - Dh / M) ** gamma, [N, N], diagonal 1."""
    m = b.shape[1]
    # clamp: float round-off can give -1e-7 before the fractional power
    return (1 - hamming(b) / m).clamp_min(0) ** gamma


def feature_graph(x: torch.Tensor, gamma: float) -> torch.Tensor:
    """Ablation "fixed graph": A from the (fixed) input features, cosine clipped to [0, 1]."""
    xn = F.normalize(x, dim=1)
    return (xn @ xn.T).clamp(0, 1) ** gamma


def normalize_adjacency(a: torch.Tensor) -> torch.Tensor:
    """Lap(A) = D^-1/2 A D^-1/2 with d = A 1 (self-loop included) + 1e-8, [N, N]."""
    d = (a.sum(dim=1) + 1e-8).rsqrt()  # (N,)
    return d[:, None] * a * d[None, :]


def gcn(z: torch.Tensor, lap: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
    """Eq. 5: z' = sigmoid(Lap(A) (z W + c)), [N, L] -> [N, L]."""
    return torch.sigmoid(lap @ linear(z))


# ---- networks ---------------------------------------------------------------------------------


class SignEncoder(nn.Module):
    """The exported hasher: features [B, D] -> logits [B, M]; the code is logits > 0."""

    def __init__(self, cfg: TBHConfig):
        super().__init__()
        self.shared = nn.Linear(cfg.feature_dim, cfg.hidden_dim)
        self.binary_head = nn.Linear(cfg.hidden_dim, cfg.bits)
        glorot_(self)

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.shared(x))  # (B, H)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.binary_head(self.hidden(x))  # (B, M)


def discriminator(in_dim: int, cfg: TBHConfig) -> nn.Module:
    """d(.) -> one logit per row (the sigmoid lives in the BCE); linear (code) or MLP (paper)."""
    if cfg.discriminator == "linear":
        return glorot_(nn.Linear(in_dim, 1))
    if cfg.discriminator == "mlp":
        h = cfg.discriminator_hidden
        return glorot_(nn.Sequential(nn.Linear(in_dim, h), nn.ReLU(), nn.Linear(h, 1)))
    raise ValueError(f"discriminator must be linear or mlp, got {cfg.discriminator!r}")


@dataclass
class TBHOutput:
    """What the losses need from one forward pass of a batch of N items."""

    x_hat: torch.Tensor  # (N, D) reconstruction
    b: torch.Tensor  # (N, M) binary bottleneck in {0, 1}
    z_graph: torch.Tensor | None  # (N, L) GCN output z' (None for the single-bottleneck ablation)


class TwinBottleneck(nn.Module):
    """The auto-encoder ("actor": encoder, continuous head, GCN, decoder) and the two critics."""

    def __init__(self, cfg: TBHConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.continuous_activation not in ("sigmoid", "relu"):
            raise ValueError(f"continuous_activation must be sigmoid or relu, got {cfg!r}")
        if cfg.decoder_output not in ("relu", "identity"):
            raise ValueError(f"decoder_output must be relu or identity, got {cfg!r}")
        if cfg.neuron_eps not in ("fixed", "random"):
            raise ValueError(f"neuron_eps must be fixed or random, got {cfg!r}")
        if cfg.adversarial_form not in ("saturating", "non_saturating"):
            raise ValueError(f"adversarial_form must be saturating or non_saturating: {cfg!r}")
        self.encoder = SignEncoder(cfg)
        bottleneck = cfg.bits if cfg.single_bottleneck else cfg.continuous_dim
        if cfg.fixed_graph and not cfg.single_bottleneck:
            bottleneck += cfg.bits  # the codes' only way to the reconstruction (docs/model.md)
        if not cfg.single_bottleneck:
            self.continuous_head = glorot_(nn.Linear(cfg.hidden_dim, cfg.continuous_dim))
            self.graph_weight = glorot_(nn.Linear(cfg.continuous_dim, cfg.continuous_dim))
            self.continuous_discriminator = discriminator(cfg.continuous_dim, cfg)
        self.decoder = glorot_(
            nn.Sequential(
                nn.Linear(bottleneck, cfg.hidden_dim),
                nn.ReLU(),
                nn.Linear(cfg.hidden_dim, cfg.feature_dim),
            )
        )
        self.binary_discriminator = discriminator(cfg.bits, cfg)

    def actor_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if "discriminator" not in n]

    def critic_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if "discriminator" in n]

    def binary_bottleneck(self, h: torch.Tensor, generator=None) -> torch.Tensor:
        """Eq. 3: hidden [N, H] -> b [N, M] in {0, 1}."""
        logits = self.encoder.binary_head(h)  # (N, M)
        if not self.cfg.stochastic_neuron:
            return StraightThroughSign.apply(logits)
        if self.cfg.neuron_eps == "random" and self.training:
            eps = torch.rand(logits.shape, generator=generator, device=logits.device)
        else:
            eps = torch.full_like(logits, 0.5)
        return StochasticBinaryNeuron.apply(logits, eps)[0]

    def continuous_bottleneck(self, h: torch.Tensor) -> torch.Tensor:
        z = self.continuous_head(h)  # (N, L)
        return torch.sigmoid(z) if self.cfg.continuous_activation == "sigmoid" else F.relu(z)

    def forward(self, x: torch.Tensor, generator=None) -> TBHOutput:
        h = self.encoder.hidden(x)  # (N, H)
        b = self.binary_bottleneck(h, generator)  # (N, M)
        if self.cfg.single_bottleneck:
            z_graph, latent = None, b
        else:
            z = self.continuous_bottleneck(h)  # (N, L)
            if self.cfg.fixed_graph:
                a = feature_graph(x, self.cfg.gamma)  # (N, N), independent of b
            else:
                a = code_graph(b, self.cfg.gamma)  # (N, N), Eq. 4
            z_graph = latent = gcn(z, normalize_adjacency(a), self.graph_weight)  # (N, L)
            if self.cfg.fixed_graph:
                latent = torch.cat([b, z_graph], dim=1)  # (N, M + L)
        x_hat = self.decoder(latent)  # (N, D)
        if self.cfg.decoder_output == "relu":
            x_hat = F.relu(x_hat)
        return TBHOutput(x_hat, b, z_graph)


# ---- losses (Eq. 7 and Eq. 9) -----------------------------------------------------------------


def adversarial(d: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """adv(real, fake) = mean BCE(1, d(real)) + mean BCE(0, d(fake)); a scalar."""
    real_logit, fake_logit = d(real), d(fake)
    return F.binary_cross_entropy_with_logits(
        real_logit, torch.ones_like(real_logit)
    ) + F.binary_cross_entropy_with_logits(fake_logit, torch.zeros_like(fake_logit))


def losses(model: TwinBottleneck, x: torch.Tensor, generator=None) -> dict[str, torch.Tensor]:
    """One forward pass of a batch x [N, D] -> {"rec", "adv_b", "adv_z", "actor", "critic"}.

    rec = 0.5 * sum (x_hat - x)^2 over the batch and dims (a sum: its scale sets the balance).
    critic = lambda * (adv_b + adv_z), over the discriminators only.
    actor = rec - lambda * (adv_b + adv_z) (saturating minimax, Eq. 9), over everything else;
    or, non-saturating, rec + lambda * (BCE(1, d_b(b)) + BCE(1, d_z(z'))).
    Priors are fresh every call: Bernoulli(0.5)^M for b and U(0, 1)^L for z'.
    """
    cfg = model.cfg
    out = model(x, generator)
    rec = 0.5 * (out.x_hat - x).pow(2).sum()
    pairs = [(model.binary_discriminator, out.b, _prior_b(out.b, generator))]
    if out.z_graph is not None:
        prior_z = torch.rand(out.z_graph.shape, generator=generator, device=x.device)
        pairs.append((model.continuous_discriminator, out.z_graph, prior_z))
    advs = [adversarial(d, real, fake) for d, fake, real in pairs]
    adv_z = advs[1] if len(advs) > 1 else torch.zeros((), device=x.device)
    lam = cfg.adversarial_weight
    if cfg.adversarial_form == "saturating":
        actor = rec - lam * sum(advs)
    else:
        actor = rec + lam * sum(_fooling(d, fake) for d, fake, _ in pairs)
    return {"rec": rec, "adv_b": advs[0], "adv_z": adv_z, "actor": actor, "critic": lam * sum(advs)}


def _prior_b(b: torch.Tensor, generator=None) -> torch.Tensor:
    """Bernoulli(0.5) samples shaped like b [N, M]."""
    return (torch.rand(b.shape, generator=generator, device=b.device) < 0.5).to(b.dtype)


def _fooling(d: nn.Module, fake: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator term: -mean log d(fake) = mean BCE(1, d(fake))."""
    logit = d(fake)
    return F.binary_cross_entropy_with_logits(logit, torch.ones_like(logit))


def decoder_output_for(features_min: float) -> str:
    """Decoder output activation for a feature set: relu when all features are >= 0."""
    return "relu" if features_min >= 0 else "identity"
