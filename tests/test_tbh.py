import math

import pytest
import torch

from tbhcli.hashing.tbh import (
    SignEncoder,
    StochasticBinaryNeuron,
    StraightThroughSign,
    TBHConfig,
    TwinBottleneck,
    code_graph,
    decoder_output_for,
    feature_graph,
    gcn,
    hamming,
    losses,
    normalize_adjacency,
)

TINY = dict(feature_dim=12, bits=8, hidden_dim=32, continuous_dim=16)


def test_neuron_forward_is_threshold_of_sigmoid_against_eps():
    logits = torch.tensor([[-2.0, -0.1, 0.1, 2.0]])
    eps = torch.tensor([[0.1, 0.5, 0.5, 0.9]])
    b, p = StochasticBinaryNeuron.apply(logits, eps)
    assert b.tolist() == [[1.0, 0.0, 1.0, 0.0]]  # sigmoid(-2) = 0.12 > 0.1, sigmoid(2) = 0.88 < 0.9
    assert torch.allclose(p, torch.sigmoid(logits))


def test_neuron_gradient_is_the_hand_formula():
    torch.manual_seed(0)
    logits = torch.randn(5, 8, dtype=torch.float64, requires_grad=True)
    eps = torch.rand(5, 8, dtype=torch.float64, requires_grad=True)
    b, p = StochasticBinaryNeuron.apply(logits, eps)
    gb, gp = torch.randn(5, 8, dtype=torch.float64), torch.randn(5, 8, dtype=torch.float64)
    total = (b * gb + p * gp).sum()
    logit_grad, eps_grad = torch.autograd.grad(total, (logits, eps), allow_unused=True)
    s = 1 / (1 + torch.exp(-logits.detach()))
    assert torch.allclose(logit_grad, s * (1 - s) * (gb + gp))  # Eq. 8
    assert eps_grad is None  # eps gets no gradient


def test_neuron_gradient_is_the_derivative_of_the_expected_bit():
    # With eps ~ U(0, 1), E[b] = sigmoid(logit); Eq. 8 is its derivative (central differences).
    logits = torch.linspace(-3, 3, 13, dtype=torch.float64).reshape(1, -1).requires_grad_()
    b, _ = StochasticBinaryNeuron.apply(logits, torch.full_like(logits, 0.5))
    (grad,) = torch.autograd.grad(b.sum(), logits)
    h = 1e-6
    x = logits.detach()
    finite = (torch.sigmoid(x + h) - torch.sigmoid(x - h)) / (2 * h)
    assert torch.allclose(grad, finite, atol=1e-8)


def test_neuron_bits_are_bernoulli_of_p_with_random_eps():
    gen = torch.Generator().manual_seed(0)
    logits = torch.full((20000, 1), math.log(0.3 / 0.7))  # p = 0.3
    b, _ = StochasticBinaryNeuron.apply(logits, torch.rand(logits.shape, generator=gen))
    assert abs(b.mean().item() - 0.3) < 0.015


def test_straight_through_sign_ablation_passes_the_gradient_unchanged():
    logits = torch.tensor([[-1.0, 0.5, 3.0]], requires_grad=True)
    b = StraightThroughSign.apply(logits)
    (grad,) = torch.autograd.grad((b * torch.tensor([[2.0, -1.0, 4.0]])).sum(), logits)
    assert b.tolist() == [[0.0, 1.0, 1.0]]
    assert grad.tolist() == [[2.0, -1.0, 4.0]]


def test_code_graph_on_a_hand_example():
    b = torch.tensor([[1, 0, 1, 0], [1, 0, 0, 0], [0, 1, 0, 1]], dtype=torch.float64)
    expected_dh = torch.tensor([[0, 1, 4], [1, 0, 3], [4, 3, 0]], dtype=torch.float64)
    assert torch.equal(hamming(b), expected_dh)
    a = code_graph(b, gamma=1.4)  # Eq. 4: (1 - Dh / M) ** gamma
    expected = torch.tensor(
        [[1, 0.75**1.4, 0], [0.75**1.4, 1, 0.25**1.4], [0, 0.25**1.4, 1]], dtype=torch.float64
    )
    assert torch.allclose(a, expected)
    assert torch.allclose(code_graph(b, gamma=1.0), 1 - expected_dh / 4)


def test_hamming_is_differentiable_in_the_codes():
    b = torch.tensor([[1.0, 0.0], [0.0, 0.0]], requires_grad=True)
    (grad,) = torch.autograd.grad(hamming(b)[0, 1], b)
    # Dh_01 = b0 (1 - b1) + (1 - b0) b1 summed over bits
    assert grad.tolist() == [[1.0, 1.0], [-1.0, 1.0]]


def test_normalized_adjacency_against_a_loop():
    torch.manual_seed(0)
    a = torch.rand(5, 5, dtype=torch.float64)
    a = (a + a.T) / 2
    lap = normalize_adjacency(a)
    d = a.sum(dim=1) + 1e-8
    for i in range(5):
        for j in range(5):
            assert math.isclose(lap[i, j], a[i, j] / math.sqrt(d[i] * d[j]), rel_tol=1e-12)


def test_gcn_is_sigmoid_of_lap_times_affine():
    torch.manual_seed(0)
    z, lap = torch.rand(4, 3), torch.rand(4, 4)
    linear = torch.nn.Linear(3, 3)
    expected = torch.sigmoid(lap @ (z @ linear.weight.T + linear.bias))
    assert torch.allclose(gcn(z, lap, linear), expected, atol=1e-6)


def test_feature_graph_ignores_the_codes_and_has_unit_diagonal():
    x = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    a = feature_graph(x, gamma=1.0)
    assert torch.allclose(a.diagonal(), torch.ones(3))
    assert math.isclose(a[0, 1].item(), 1 / math.sqrt(2), rel_tol=1e-6)
    assert a[0, 2].item() == 0.0


def test_presets_code_and_paper_differ_in_the_documented_fields():
    code, paper = TBHConfig.preset("code"), TBHConfig.preset("paper")
    assert (code.continuous_activation, paper.continuous_activation) == ("sigmoid", "relu")
    assert (code.decoder_output, paper.decoder_output) == ("relu", "identity")
    assert (code.discriminator, paper.discriminator) == ("linear", "mlp")
    assert (code.neuron_eps, paper.neuron_eps) == ("fixed", "random")
    assert (code.gamma, paper.gamma) == (1.4, 1.0)
    assert TBHConfig.preset("paper", gamma=1.4).gamma == 1.4  # explicit fields win
    with pytest.raises(ValueError):
        TBHConfig.preset("nope")


def test_glorot_uniform_init_with_zero_biases():
    torch.manual_seed(0)
    enc = SignEncoder(TBHConfig(**TINY))
    bound = math.sqrt(6 / (12 + 32))
    w = enc.shared.weight
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound
    assert torch.count_nonzero(enc.shared.bias) == 0


def test_model_contains_the_sign_encoder_and_codes_are_logits_above_zero():
    torch.manual_seed(0)
    model = TwinBottleneck(TBHConfig(**TINY)).eval()
    x = torch.rand(6, 12)
    out = model(x)
    assert isinstance(model.encoder, SignEncoder)
    assert torch.equal(out.b, (model.encoder(x) > 0).float())
    assert out.x_hat.shape == (6, 12) and out.z_graph.shape == (6, 16)
    assert out.x_hat.min() >= 0  # relu decoder output (code variant)


@pytest.mark.parametrize(
    "ablation",
    [{}, {"single_bottleneck": True}, {"fixed_graph": True}, {"stochastic_neuron": False}],
)
def test_losses_follow_eq_9(ablation):
    torch.manual_seed(0)
    model = TwinBottleneck(TBHConfig(**TINY, **ablation))
    x = torch.rand(6, 12)
    terms = losses(model, x, torch.Generator().manual_seed(1))
    out_again = model(x)
    assert torch.allclose(terms["rec"], 0.5 * (out_again.x_hat - x).pow(2).sum())
    adv = terms["adv_b"] + terms["adv_z"]
    assert torch.allclose(terms["actor"], terms["rec"] - adv)
    assert torch.allclose(terms["critic"], adv)
    if ablation.get("single_bottleneck"):
        assert terms["adv_z"].item() == 0 and not hasattr(model, "continuous_head")
    # every actor parameter gets a gradient from the actor loss
    grads = torch.autograd.grad(terms["actor"], model.actor_parameters(), allow_unused=True)
    assert all(g is not None and torch.count_nonzero(g) > 0 for g in grads)


def test_non_saturating_form_uses_log_d_of_the_fakes():
    torch.manual_seed(0)
    model = TwinBottleneck(TBHConfig(**TINY, adversarial_form="non_saturating"))
    x = torch.rand(6, 12)
    terms = losses(model, x, torch.Generator().manual_seed(1))
    out = model(x)
    fool_b = -torch.nn.functional.logsigmoid(model.binary_discriminator(out.b)).mean()
    fool_z = -torch.nn.functional.logsigmoid(model.continuous_discriminator(out.z_graph)).mean()
    assert torch.allclose(terms["actor"], terms["rec"] + fool_b + fool_z, rtol=1e-5)


def test_paper_variant_builds_mlp_discriminators_and_random_eps():
    torch.manual_seed(0)
    model = TwinBottleneck(TBHConfig.preset("paper", **TINY))
    x = torch.rand(8, 12)
    gen = torch.Generator().manual_seed(0)
    b1, b2 = model(x, gen).b, model(x, gen).b
    assert not torch.equal(b1, b2)  # eps ~ U(0, 1) per element while training
    model.eval()
    assert torch.equal(model(x).b, model(x).b)  # eps = 0.5 at test time
    assert isinstance(model.binary_discriminator, torch.nn.Sequential)


def test_decoder_output_follows_the_sign_of_the_features():
    assert decoder_output_for(0.0) == "relu"
    assert decoder_output_for(-0.5) == "identity"
