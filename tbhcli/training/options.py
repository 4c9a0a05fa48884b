"""What `tbh train` / `tbhcli.train` can be asked, each setting and its default written once.

`TrainOptions` is the one list: the CLI builds it from its flags (and takes its defaults from
it), the Python verb from its keywords, and `check()` refuses every bad value before data is
read. Nothing heavy is imported at module level, so `tbh --help` can read the defaults.
"""

import math
from dataclasses import dataclass, fields, replace
from pathlib import Path

from tbhcli.errors import TbhError, option

DECODER_OUTPUTS = ("auto", "relu", "identity")
DISTANCES = ("euclidean", "cosine")  # of the neighbours held-out recall compares against
NEIGHBOURS = 100  # k of held-out neighbour recall@k
MAX_LR = 1.0  # Adam steps of this size already wreck a network; larger is a typo


@dataclass(frozen=True)
class Preset:
    """Training settings that travel together; `lr`, `steps`, `gamma` override them."""

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


def methods() -> tuple[str, ...]:
    """What `method` may be: TBH, each baseline, or auto (all of them, the best kept)."""
    from tbhcli.hashing.baselines import BASELINES

    return ("tbh", *BASELINES, "auto")


@dataclass(frozen=True)
class TrainOptions:
    """The arguments of `tbh train` / `tbhcli.train`, before any data is read.

    >>> options = TrainOptions("features.npy", bits=64)
    >>> options.batch_size, options.learning_rate, options.out_dir().as_posix()
    (400, 0.001, 'runs/features-tbh-64')
    >>> TrainOptions("features.npy", batch_size=0).check()
    Traceback (most recent call last):
    tbhcli.errors.TbhError: batch_size must be at least 1 (got 0).
    """

    features: Path
    bits: int = 32
    method: str = "tbh"
    steps: int | None = None  # exactly this many; None: the preset's schedule
    batch_size: int = 400  # items per step, also the size of TBH's per-batch graph
    seed: int = 0
    out: Path | None = None  # the run directory (default: runs/NAME-METHOD-BITS)
    resume: bool = False
    force: bool = False
    variant: str = "code"
    preset: str = "fast"
    lr: float | None = None
    decoder_output: str = "auto"
    gamma: float | None = None
    single_bottleneck: bool = False
    fixed_graph: bool = False
    stochastic_neuron: bool = True
    model_fields: dict | None = None  # any other TBHConfig field
    val_fraction: float = 0.1  # of the training features, held out for validation
    val_every: int = 100  # steps between validations
    patience: int = 300  # steps without a held-out gain before stopping
    min_steps: int = 500  # never stop before this step
    neighbours: int = NEIGHBOURS
    distance: str = "euclidean"
    eval_every: int = 0
    eval_queries: Path | None = None
    log_every: int = 10
    checkpoint_every: int = 500
    device: str = "auto"
    quiet: bool = False

    def with_settings(self, **settings) -> "TrainOptions":
        """A copy with `settings` changed; an unknown name is a TypeError that lists the known."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise TypeError(
                f"train() got unknown settings {', '.join(unknown)}; TrainOptions has "
                f"{', '.join(sorted(known))}."
            )
        return replace(self, **settings)

    @property
    def schedule(self) -> Preset:
        return PRESETS[self.preset]

    @property
    def stops_early(self) -> bool:
        """Stop at the plateau: the preset says so, no exact steps, something held out."""
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
        from tbhcli.workspace import RUNS_DIR

        name = Path(self.features).name.removesuffix(".npy")
        return RUNS_DIR / f"{name}-{self.method}-{self.bits}"

    def check(self) -> None:
        """Refuse every bad value with one line, before data is read or memory allocated."""
        from tbhcli.hashing.codes import check_bits
        from tbhcli.hashing.tbh import VARIANTS

        check_bits(self.bits)
        choose("method", self.method, methods())
        choose("variant", self.variant, VARIANTS)
        choose("preset", self.preset, PRESETS)
        choose("decoder_output", self.decoder_output, DECODER_OUTPUTS)
        choose("distance", self.distance, DISTANCES)
        if self.steps is not None and self.steps < 1:
            raise TbhError(f"{option('steps')} must be at least 1 (got {self.steps}).")
        for name in ("batch_size", "neighbours", "val_every", "log_every"):
            if getattr(self, name) < 1:
                raise TbhError(f"{option(name)} must be at least 1 (got {getattr(self, name)}).")
        for name in ("patience", "min_steps"):
            if getattr(self, name) < 0:
                raise TbhError(f"{option(name)} must be 0 or more (got {getattr(self, name)}).")
        if self.lr is not None and not (0 < self.lr <= MAX_LR):
            raise TbhError(
                f"{option('lr')} must be a finite number in (0, {MAX_LR:g}] (got {self.lr}); "
                "Adam's usual range is 1e-5 to 1e-2."
            )
        if self.gamma is not None and not (0 < self.gamma < math.inf):
            raise TbhError(
                f"{option('gamma')} must be a positive finite number (got {self.gamma})."
            )
        if self.eval_every and self.eval_queries is None:
            raise TbhError(
                f"{option('eval_every')} needs {option('eval_queries')} QUERIES.npy "
                "(with QUERIES.labels.npy)."
            )
        if not 0 <= self.val_fraction < 1:
            raise TbhError(f"{option('val_fraction')} must be in [0, 1) (got {self.val_fraction}).")
        if self.method == "auto" and self.val_fraction == 0:
            raise TbhError(
                f"{option('method')} auto compares held-out scores; it needs "
                f"{option('val_fraction')} > 0."
            )


def choose(name: str, value: str, allowed) -> None:
    if value not in allowed:
        raise TbhError(f"unknown {option(name)} {value!r}; choose one of {', '.join(allowed)}.")
