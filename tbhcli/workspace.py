"""Workspace defaults (newest run under `runs/`, newest model under `onnx/`, `codes.zarr`) and
the sha256 by which runs, models and stores name the files they were made from.

Every verb takes an explicit path; these helpers fill in the ones a user left out, relative to the
current directory, and say what to do when nothing is there yet.
"""

import hashlib
from pathlib import Path

from tbhcli.errors import TbhError

RUNS_DIR = Path("runs")
MODELS_DIR = Path("onnx")
STORE_PATH = Path("codes.zarr")
FEATURES_SUFFIX = ".features.onnx"  # features -> codes models; a plain .onnx takes images
ENCODER_FILE = "encoder.safetensors"  # written last by `tbh train`: a run that has it is finished


def _newest(paths: list[Path]) -> Path | None:
    return max(paths, key=lambda p: p.stat().st_mtime, default=None)


def newest_finished_run() -> tuple[Path, float] | None:
    """(run directory, time its weights were written) of the newest finished run in ./runs."""
    weights = _newest(list(RUNS_DIR.glob(f"*/{ENCODER_FILE}")))
    return None if weights is None else (weights.parent, weights.stat().st_mtime)


def resolve_run(run: str | Path | None) -> Path:
    """The given run directory, or the newest finished one under `runs/`."""
    if run is not None:
        return Path(run)
    newest = newest_finished_run()
    if newest is None:
        raise TbhError("no trained run in ./runs; train one with `tbh train FEATURES.npy`.")
    return newest[0]


def resolve_model(model: str | Path | None) -> Path:
    """The given ONNX file, or the newest `onnx/*.onnx` that takes images."""
    if model is not None:
        path = Path(model)
        if not path.is_file():
            raise TbhError(f"model file not found: {path}")
        return path
    models = [p for p in MODELS_DIR.glob("*.onnx") if not p.name.endswith(FEATURES_SUFFIX)]
    newest = _newest(models)
    if newest is None:
        raise TbhError("no image model in ./onnx; export a run with `tbh export`.")
    return newest


def resolve_store(store: str | Path | None, must_exist: bool = True) -> Path:
    """The given store, or `./codes.zarr`."""
    path = Path(store) if store is not None else STORE_PATH
    if must_exist and not path.exists():
        raise TbhError(f"no code store at {path}; build one with `tbh index IMAGES_DIR`.")
    return path


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes: how runs, models and stores name their inputs."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()
