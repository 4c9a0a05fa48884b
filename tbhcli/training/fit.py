"""`tbh train`: fit TBH (or LSH / PCAH / ITQ) on a feature set and write `runs/<name>/`.

    tbh train feats/mnist_db.npy --bits 32 --steps 3000 --preset fast \\
        --eval-every 500 --eval-queries feats/mnist_q.npy
    tbh train feats/mnist_db.npy --bits 32 --method itq

This module is the verb: presets, input checks, the run directory and its config. The code-driven
graph is built per batch, so the batch size is part of the model: fewer items than a batch is an
error. The TBH loop itself (two Adam optimisers, checkpoints, `--eval-every`) is in loop.py.
"""

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import tbhcli
from tbhcli.device import torch_device
from tbhcli.errors import TbhError
from tbhcli.hashing import runs
from tbhcli.hashing.codes import check_bits
from tbhcli.hashing.tbh import VARIANTS, TBHConfig, decoder_output_for
from tbhcli.imaging.featureset import load_features, load_meta
from tbhcli.training.loop import CHECKPOINT_FILE, EVAL_METRIC, HeldOut, fit_tbh
from tbhcli.workspace import RUNS_DIR, file_sha256

METHODS = ("tbh", "itq", "pcah", "lsh")


@dataclass(frozen=True)
class Preset:
    """Training settings that travel together; `--lr`/`--steps` override them one by one."""

    lr: float
    steps: int
    note: str


PRESETS = {
    # the released code: Adam 1e-4 for 100,000 steps of batch 400
    "faithful": Preset(lr=1e-4, steps=100_000, note="reference schedule (Adam 1e-4, 100k steps)"),
    # measured in docs/results.md: same model and losses, 10x the learning rate, 30x fewer steps
    "fast": Preset(lr=1e-3, steps=3_000, note="Adam 1e-3, 3k steps (see docs/results.md)"),
}


def default_out(features: Path, method: str, bits: int) -> Path:
    return RUNS_DIR / f"{features.name.removesuffix('.npy')}-{method}-{bits}"


def prepare_out(out: Path, resume: bool, force: bool) -> bool:
    """Never overwrite a run silently: a used directory needs --resume or --force.

    Returns whether there is a checkpoint to resume from (--resume on a run killed before its
    first checkpoint simply starts it again).
    """
    has_checkpoint = (out / CHECKPOINT_FILE).exists()
    used = (out / runs.CONFIG_FILE).exists() or has_checkpoint
    if used and not resume and not force:
        raise TbhError(
            f"{out} already holds a run; pass --resume to continue it, --force to overwrite it, "
            "or --out to choose another directory."
        )
    if force and not resume:
        for name in (runs.CONFIG_FILE, runs.ENCODER_FILE, runs.LOG_FILE, CHECKPOINT_FILE):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    return resume and has_checkpoint


# ---- the verb ---------------------------------------------------------------------------------


def train(
    features: Path,
    bits: int = 32,
    method: str = "tbh",
    steps: int | None = None,
    batch_size: int = 400,
    seed: int = 0,
    out: Path | None = None,
    resume: bool = False,
    force: bool = False,
    variant: str = "code",
    preset: str = "faithful",
    lr: float | None = None,
    decoder_output: str = "auto",
    gamma: float | None = None,
    single_bottleneck: bool = False,
    fixed_graph: bool = False,
    stochastic_neuron: bool = True,
    model_fields: dict | None = None,
    eval_every: int = 0,
    eval_queries: Path | None = None,
    log_every: int = 10,
    checkpoint_every: int = 500,
    device: str = "auto",
    quiet: bool = False,
) -> Path:
    """Train a hasher on `features` (NAME.npy [N, D]) and return its run directory.

    `gamma` is the graph's exponent (Eq. 4; default: the variant's, 1.4 code / 1.0 paper).
    `model_fields` sets any other `TBHConfig` field (e.g. `{"adversarial_weight": 10.0}`); it is
    recorded in the run's config like every other setting.
    """
    features = Path(features)
    check_bits(bits)
    if method not in METHODS:
        raise TbhError(f"unknown --method {method!r}; choose one of {', '.join(METHODS)}.")
    if variant not in VARIANTS:
        raise TbhError(f"unknown --variant {variant!r}; choose one of {', '.join(VARIANTS)}.")
    if preset not in PRESETS:
        raise TbhError(f"unknown --preset {preset!r}; choose one of {', '.join(PRESETS)}.")
    if decoder_output not in ("auto", "relu", "identity"):
        raise TbhError(f"--decoder-output must be auto, relu or identity (got {decoder_output!r}).")
    data = load_features(features)
    n, dim = data.features.shape
    meta = load_meta(features)
    settings = PRESETS[preset]
    steps = settings.steps if steps is None else steps
    if steps < 1:
        raise TbhError(f"--steps must be at least 1 (got {steps}).")
    if eval_every and eval_queries is None:
        raise TbhError("--eval-every needs --eval-queries QUERIES.npy (with QUERIES.labels.npy).")
    config = {
        "method": method,
        "bits": bits,
        "feature_dim": dim,
        "num_items": n,
        "features": str(features),
        "features_sha256": file_sha256(features),
        "backbone": meta.get("backbone"),
        "image_size": meta.get("image_size"),
        "seed": seed,
        "tbh_version": tbhcli.__version__,
    }
    out = Path(out) if out is not None else default_out(features, method, bits)
    if method != "tbh":
        prepare_out(out, resume=False, force=force or resume)  # refitting is cheap and exact
        from tbhcli.hashing.baselines import fit_baseline

        t0 = time.perf_counter()
        encoder = fit_baseline(method, data.features, bits, seed)
        (out / runs.LOG_FILE).write_text(
            json.dumps({"fit_seconds": time.perf_counter() - t0}) + "\n"
        )
        runs.save_run(out, config, encoder)
        return out

    if batch_size < 1:
        raise TbhError(f"--batch-size must be at least 1 (got {batch_size}).")
    if lr is not None and not lr > 0:
        raise TbhError(f"--lr must be positive (got {lr}).")
    if gamma is not None and not gamma > 0:
        raise TbhError(f"--gamma must be positive (got {gamma}).")
    if n < batch_size:
        raise TbhError(
            f"{features} has {n} items, fewer than --batch-size {batch_size}; the per-batch graph "
            "needs full batches: lower --batch-size or add items."
        )
    model_fields = (model_fields or {}) | {
        "feature_dim": dim,
        "bits": bits,
        "single_bottleneck": single_bottleneck,
        "fixed_graph": fixed_graph,
        "stochastic_neuron": stochastic_neuron,
    }
    if gamma is not None:
        model_fields["gamma"] = gamma
    if decoder_output != "auto":
        model_fields["decoder_output"] = decoder_output
    elif variant == "code":  # the paper's decoder is linear; the code's follows the data's sign
        model_fields["decoder_output"] = decoder_output_for(float(data.features.min()))
    dev = torch_device(device)
    config |= {
        "variant": variant,
        "preset": preset,
        "steps": steps,
        "batch_size": batch_size,
        "lr": settings.lr if lr is None else lr,
        "eval_every": eval_every,
        "eval_queries": None if eval_queries is None else str(eval_queries),
        "device": dev.type,
        "model": asdict(TBHConfig.preset(variant, **model_fields)),
    }
    held_out = HeldOut(data, Path(eval_queries), dev) if eval_every else None
    resume = prepare_out(out, resume, force)
    fit_tbh(out, data, config, dev, resume, held_out, log_every, checkpoint_every, quiet)
    return out


def read_log(run: Path) -> list[dict]:
    """The rows of a run's log.jsonl (loss rows and evaluation rows)."""
    path = Path(run) / runs.LOG_FILE
    return [json.loads(r) for r in path.read_text().splitlines() if r] if path.is_file() else []


def eval_curve(run: Path) -> list[tuple[int, float]]:
    """(step, mAP@1000) pairs logged with --eval-every."""
    return [(r["step"], r[EVAL_METRIC]) for r in read_log(run) if EVAL_METRIC in r]
