"""`tbh train`: fit TBH (or LSH / PCAH / ITQ, or the best of them) and write `runs/<name>/`.

    tbh train feats/db.npy --bits 32                  # TBH, stops at its validation plateau
    tbh train feats/db.npy --bits 32 --method auto    # TBH, ITQ, PCAH, LSH: keep the best
    tbh train feats/db.npy --bits 32 --preset faithful --steps 100000   # the released schedule

The verb runs in three stages: `TrainOptions.check` (every value, before data is read), the run's
config (config.py), then the fit. A slice of the features (10 %, at most 2,000) is held out for
validation (validation.py); TBH stops when held-out neighbour recall stops improving, and at the
end ITQ is fitted on the same split so the user learns which codes are better on their data
(compare.py). The TBH loop itself (optimisers, checkpoints, divergence stop) is in loop.py.
"""

import json
import shutil
from dataclasses import replace
from pathlib import Path

import torch

from tbhcli.device import torch_device
from tbhcli.errors import TbhError, option
from tbhcli.hashing import runs
from tbhcli.hashing.runfiles import read_log
from tbhcli.imaging.featureset import FeatureSet, load_features
from tbhcli.training.compare import Comparison, compare_baselines, summary_row
from tbhcli.training.config import check_data, run_config
from tbhcli.training.loop import CHECKPOINT_FILE, EVAL_METRIC, Diverged, HeldOut, fit_tbh
from tbhcli.training.options import PRESETS, TrainOptions
from tbhcli.training.report import TrainRun
from tbhcli.training.validation import Split, Validator, split_rows

__all__ = [
    "PRESETS",
    "TrainOptions",
    "TrainRun",
    "train",
    "read_log",
    "eval_curve",
    "val_curve",
    "summary",
]


def prepare_out(out: Path, resume: bool, force: bool) -> bool:
    """Never overwrite a run silently: a used directory needs `resume` or `force`.

    Returns whether there is a checkpoint to resume from (--resume on a run killed before its
    first checkpoint simply starts it again).
    """
    has_checkpoint = (out / CHECKPOINT_FILE).exists()
    used = (out / runs.CONFIG_FILE).exists() or has_checkpoint
    if used and not resume and not force:
        raise TbhError(
            f"{out} already holds a run; pass {option('resume', python='resume=True')} to "
            f"continue it, {option('force', python='force=True')} to overwrite it, or "
            f"{option('out', python='another out')} to choose another directory."
        )
    if force and not resume:
        for name in (runs.CONFIG_FILE, runs.ENCODER_FILE, runs.LOG_FILE, CHECKPOINT_FILE):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    return resume and has_checkpoint


# ---- the verb ---------------------------------------------------------------------------------


def train(features: str | Path, options: TrainOptions | None = None, **settings) -> TrainRun:
    """Train a hasher on `features` (NAME.npy [N, D]) and return the finished run.

    `options` holds every setting (`TrainOptions`, where each default is written); `settings`
    change any of them by name, so `train("db.npy", bits=64, method="auto")` reads as the
    command line does. `preset` "fast" (default) stops when held-out neighbour recall stops
    improving (`patience` steps without a gain, not before `min_steps`; `steps` trains exactly
    that many instead); "faithful" is the released code's schedule. `gamma` is the graph's
    exponent (Eq. 4; default: the preset's, else the variant's). `model_fields` sets any other
    `TBHConfig` field. `method` "auto" trains TBH, ITQ, PCAH and LSH and keeps the best on the
    held-out items. The returned `TrainRun` is the run directory and how it went: `scores`,
    `kept`, `verdict`, `to_json()`.

    >>> import numpy as np, tempfile, tbhcli
    >>> folder = Path(tempfile.mkdtemp())
    >>> x = np.random.default_rng(0).random((300, 16), dtype=np.float32)
    >>> np.save(folder / "db.npy", x)
    >>> run = tbhcli.train(folder / "db.npy", bits=8, method="itq", out=folder / "run")
    >>> run.kept, sorted(run.scores), (run / "config.json").is_file()
    ('itq', ['itq'], True)
    """
    options = (options or TrainOptions(features)).with_settings(features=Path(features), **settings)
    options.check()
    data = load_features(options.features)
    split = split_rows(len(data), options.val_fraction, options.seed)
    check_data(options, data, split)
    path = fit(options, data, split)
    return TrainRun(path, summary(path))


def fit(options: TrainOptions, data: FeatureSet, split: Split) -> Path:
    """Fit the checked `options` on `data` and write the run (with its summary row in the log)."""
    out = options.out_dir()
    dev = torch_device(options.device)
    validator = None
    if len(split.held_out):
        validator = Validator(data, split, dev, options.neighbours, options.distance)
    trained = "tbh" if options.method == "auto" else options.method
    config = run_config(replace(options, method=trained), data, split, dev.type)
    if trained != "tbh":
        prepare_out(out, resume=False, force=options.force or options.resume)  # refits are exact
        comparison = compare_baselines(
            data, split, options.bits, options.seed, (trained,), validator
        )
        runs.save_run(out, config, comparison.encoders[trained])
        _append_log(out / runs.LOG_FILE, summary_row(comparison, trained, trained, 0, None))
        return out
    held_out = HeldOut(data, Path(options.eval_queries), dev) if options.eval_every else None
    created = not out.exists()
    resume = prepare_out(out, options.resume, options.force)
    x = torch.from_numpy(data.features[split.train]).to(dev)
    try:
        result = fit_tbh(
            out, x, config, resume, validator, held_out, options.log_every,
            options.checkpoint_every, options.quiet,
        )  # fmt: skip
    except Diverged:  # no run is written, and nothing of a new one is left behind
        if not resume:
            (out / runs.LOG_FILE).unlink(missing_ok=True)
            (out / CHECKPOINT_FILE).unlink(missing_ok=True)
        if created and not any(out.iterdir()):
            shutil.rmtree(out)
        raise
    others = ("itq", "pcah", "lsh") if options.method == "auto" else ("itq",)
    comparison = Comparison()
    if validator is not None:
        tbh_encoder = runs.load_run(out).encoder
        comparison.add("tbh", validator(tbh_encoder), tbh_encoder)
        compare_baselines(data, split, options.bits, options.seed, others, validator, comparison)
    kept = comparison.best() if options.method == "auto" else "tbh"
    if kept != "tbh":  # --method auto: a baseline beat TBH on the held-out items
        (out / CHECKPOINT_FILE).unlink(missing_ok=True)
        baseline = run_config(replace(options, method=kept), data, split, dev.type)
        runs.save_run(out, baseline, comparison.encoders[kept])
    row = summary_row(comparison, kept, options.method, result.step, result)
    _append_log(out / runs.LOG_FILE, row)
    return out


def _append_log(path: Path, row: dict) -> None:
    with open(path, "a") as log:
        log.write(json.dumps(row) + "\n")


def eval_curve(run: Path) -> list[tuple[int, float]]:
    """(step, mAP@1000) pairs logged with --eval-every."""
    return [(r["step"], r[EVAL_METRIC]) for r in read_log(run) if EVAL_METRIC in r]


def val_curve(run: Path) -> list[tuple[int, dict[str, float]]]:
    """(step, held-out scores) pairs logged every --val-every steps."""
    return [(r["step"], r["val"]) for r in read_log(run) if "val" in r]


def summary(run: Path) -> dict:
    """The last summary row of a run: held-out scores of each method fitted, the kept one, why."""
    rows = [r["summary"] for r in read_log(run) if "summary" in r]
    if not rows:
        raise TbhError(f"{run} has no training summary in {runs.LOG_FILE}; it did not finish.")
    return rows[-1]
