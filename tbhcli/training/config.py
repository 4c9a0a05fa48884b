"""What `tbh train` was asked (`TrainOptions`, checked up front) and what a run records.

Two stages, so that nothing is loaded or allocated before every option is known to be sane:
`TrainOptions.check()` refuses bad values without touching the data; `run_config()` then turns the
options and the loaded features into the run's config, the one record of every setting (bits and
feature_dim at its top level only; `model` holds the other TBHConfig fields).
"""

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

import tbhcli
from tbhcli.errors import TbhError
from tbhcli.hashing.baselines import BASELINES
from tbhcli.hashing.codes import check_bits
from tbhcli.hashing.tbh import VARIANTS, TBHConfig, decoder_output_for
from tbhcli.imaging.featureset import FeatureSet, load_meta
from tbhcli.training import defaults
from tbhcli.training.validation import DISTANCES, NEIGHBOURS, Split
from tbhcli.workspace import RUNS_DIR, file_sha256

METHODS = ("tbh", *BASELINES, "auto")
DECODER_OUTPUTS = ("auto", "relu", "identity")
MAX_LR = 1.0  # Adam steps of this size already wreck a network; larger is a typo


@dataclass(frozen=True)
class Preset:
    """Training settings that travel together; `--lr`, `--steps`, `--gamma` override them."""

    lr: float
    steps: int  # the most steps; exactly this many when `stop` is False
    gamma: float | None  # graph exponent; None: the variant's (1.4 code, 1.0 paper)
    stop: bool  # stop at the validation plateau
    note: str


PRESETS = {
    # measured best on the demo features (docs/results.md): Adam 1e-3, a local graph, and
    # stop when held-out neighbour recall stops improving (it plateaus by 1,000-1,500 steps)
    "fast": Preset(1e-3, 4_000, 8.0, True, "Adam 1e-3, gamma 8, stops at its plateau"),
    # the released code: Adam 1e-4 for 100,000 steps of batch 400, gamma 1.4
    "faithful": Preset(1e-4, 100_000, None, False, "Adam 1e-4, 100k steps, gamma 1.4"),
}


@dataclass(frozen=True)
class TrainOptions:
    """The arguments of `tbh train` / `tbhcli.train`, before any data is read."""

    features: Path
    bits: int = 32
    method: str = "tbh"
    steps: int | None = None
    batch_size: int = 400
    seed: int = 0
    out: Path | None = None
    resume: bool = False
    force: bool = False
    variant: str = "code"
    preset: str = defaults.PRESET
    lr: float | None = None
    decoder_output: str = "auto"
    gamma: float | None = None
    single_bottleneck: bool = False
    fixed_graph: bool = False
    stochastic_neuron: bool = True
    model_fields: dict | None = None
    val_fraction: float = defaults.VAL_FRACTION
    val_every: int = defaults.VAL_EVERY
    patience: int = defaults.PATIENCE
    min_steps: int = defaults.MIN_STEPS
    neighbours: int = NEIGHBOURS
    distance: str = "euclidean"
    eval_every: int = 0
    eval_queries: Path | None = None
    log_every: int = 10
    checkpoint_every: int = 500
    device: str = "auto"
    quiet: bool = False

    @classmethod
    def from_arguments(cls, arguments: dict) -> "TrainOptions":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in arguments.items() if k in names})

    @property
    def schedule(self) -> Preset:
        return PRESETS[self.preset]

    @property
    def stops_early(self) -> bool:
        """Stop at the plateau: the preset says so, no exact --steps, something held out."""
        return self.schedule.stop and self.steps is None and self.val_fraction > 0

    @property
    def max_steps(self) -> int:
        return self.schedule.steps if self.steps is None else self.steps

    @property
    def learning_rate(self) -> float:
        return self.schedule.lr if self.lr is None else self.lr

    @property
    def graph_gamma(self) -> float | None:
        return self.schedule.gamma if self.gamma is None else self.gamma

    def out_dir(self) -> Path:
        if self.out is not None:
            return Path(self.out)
        name = Path(self.features).name.removesuffix(".npy")
        return RUNS_DIR / f"{name}-{self.method}-{self.bits}"

    def check(self) -> None:
        """Refuse every bad value with one line, before data is read or memory allocated."""
        check_bits(self.bits)
        choose("--method", self.method, METHODS)
        choose("--variant", self.variant, VARIANTS)
        choose("--preset", self.preset, PRESETS)
        choose("--decoder-output", self.decoder_output, DECODER_OUTPUTS)
        choose("distance", self.distance, DISTANCES)
        if self.steps is not None and self.steps < 1:
            raise TbhError(f"--steps must be at least 1 (got {self.steps}).")
        at_least_1 = ("--batch-size", self.batch_size), ("--neighbours", self.neighbours)
        at_least_1 += ("--val-every", self.val_every), ("--log-every", self.log_every)
        for name, value in at_least_1:
            if value < 1:
                raise TbhError(f"{name} must be at least 1 (got {value}).")
        for name, value in (("--patience", self.patience), ("--min-steps", self.min_steps)):
            if value < 0:
                raise TbhError(f"{name} must be 0 or more (got {value}).")
        if self.lr is not None and not (0 < self.lr <= MAX_LR):
            raise TbhError(
                f"--lr must be a finite number in (0, {MAX_LR:g}] (got {self.lr}); "
                "Adam's usual range is 1e-5 to 1e-2."
            )
        if self.gamma is not None and not (0 < self.gamma < math.inf):
            raise TbhError(f"--gamma must be a positive finite number (got {self.gamma}).")
        if self.eval_every and self.eval_queries is None:
            raise TbhError(
                "--eval-every needs --eval-queries QUERIES.npy (with QUERIES.labels.npy)."
            )
        if not 0 <= self.val_fraction < 1:
            raise TbhError(f"--val-fraction must be in [0, 1) (got {self.val_fraction}).")
        if self.method == "auto" and self.val_fraction == 0:
            raise TbhError("--method auto compares held-out scores; it needs --val-fraction > 0.")


def choose(option: str, value: str, allowed) -> None:
    if value not in allowed:
        raise TbhError(f"unknown {option} {value!r}; choose one of {', '.join(allowed)}.")


def check_data(options: TrainOptions, data: FeatureSet, split: Split) -> None:
    """The checks that need the data: enough items for a full TBH batch, PCA's rank."""
    n_train = len(split.train)
    if options.method in ("tbh", "auto") and n_train < options.batch_size:
        held = f" after holding out {len(split.held_out)}" if len(split.held_out) else ""
        raise TbhError(
            f"{options.features} has {n_train} training items{held}, fewer than --batch-size "
            f"{options.batch_size}; the per-batch graph needs full batches: lower --batch-size "
            "or add items."
        )
    if options.method in ("pcah", "itq") and options.bits > min(n_train, data.dim):
        raise TbhError(
            f"PCA-based hashing needs bits <= min(N, D) = {min(n_train, data.dim)}, "
            f"got {options.bits}."
        )


def model_fields(options: TrainOptions, data: FeatureSet) -> dict:
    """The TBHConfig fields of the run (without bits and feature_dim, which the run holds once)."""
    chosen = dict(options.model_fields or {}) | {
        "single_bottleneck": options.single_bottleneck,
        "fixed_graph": options.fixed_graph,
        "stochastic_neuron": options.stochastic_neuron,
    }
    if options.graph_gamma is not None:
        chosen["gamma"] = options.graph_gamma
    if options.decoder_output != "auto":
        chosen["decoder_output"] = options.decoder_output
    elif options.variant == "code":  # the paper's decoder is linear; the code's follows the data
        chosen["decoder_output"] = decoder_output_for(float(data.features.min()))
    model = asdict(TBHConfig.preset(options.variant, bits=options.bits, **chosen))
    return {k: v for k, v in model.items() if k not in ("bits", "feature_dim")}


def run_config(options: TrainOptions, data: FeatureSet, split: Split, device: str) -> dict:
    """config.json of the run: every setting that made it, each stored once."""
    meta = load_meta(options.features)
    config = {
        "method": options.method,
        "bits": options.bits,
        "feature_dim": data.dim,
        "num_items": len(data),
        "features": str(options.features),
        "features_sha256": file_sha256(Path(options.features)),
        "backbone": meta.get("backbone"),
        "image_size": meta.get("image_size"),
        # how to rebuild that backbone in `tbh export` (absent for features made outside tbh)
        "backbone_weights": meta.get("weights"),
        "backbone_weights_file": meta.get("weights_file"),
        "backbone_mean": meta.get("mean"),
        "backbone_std": meta.get("std"),
        "seed": options.seed,
        "tbh_version": tbhcli.__version__,
        "validation": validation_config(options, split),
    }
    if options.method not in ("tbh", "auto"):
        return config
    stop = None
    if options.stops_early:
        stop = {"patience": options.patience, "min_steps": options.min_steps}
    return config | {
        "variant": options.variant,
        "preset": options.preset,
        "steps": options.max_steps,
        "stop": stop,
        "val_every": options.val_every,
        "batch_size": options.batch_size,
        "lr": options.learning_rate,
        "eval_every": options.eval_every,
        "eval_queries": None if options.eval_queries is None else str(options.eval_queries),
        "device": device,
        "model": model_fields(options, data),
    }


def validation_config(options: TrainOptions, split: Split) -> dict | None:
    if not len(split.held_out):
        return None
    return {
        "fraction": options.val_fraction,
        "held_out": int(len(split.held_out)),
        "train": int(len(split.train)),
        "neighbours": options.neighbours,
        "distance": options.distance,
        "rows_sha256": rows_digest(split.held_out),
    }


def rows_digest(rows: np.ndarray) -> str:
    """A short fingerprint of the held-out rows, so a resumed run provably uses the same split."""
    import hashlib

    return hashlib.sha256(np.asarray(rows, np.int64).tobytes()).hexdigest()[:16]
