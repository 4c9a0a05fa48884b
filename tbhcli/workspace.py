"""Workspace defaults (newest run under `runs/`, newest model under `onnx/`, `codes.zarr`) and
the sha256 by which runs, models and stores name the files they were made from.

Every verb takes an explicit path; these helpers fill in the ones a user left out, relative to the
current directory, say which one they picked (one line on stderr: "using model onnx/x.onnx
(newest)"), and say what to do when nothing is there yet.
"""

import hashlib
import os
import sys
from collections.abc import Iterable
from pathlib import Path

from tbhcli.errors import TbhError
from tbhcli.terminal import printable

RUNS_DIR = Path("runs")
MODELS_DIR = Path("onnx")
STORE_PATH = Path("codes.zarr")
FEATURES_SUFFIX = ".features.onnx"  # features -> codes models; a plain .onnx takes images
TEXT_SUFFIX = ".text.onnx"  # text -> codes models, beside their images model (clip:NAME runs)
ENCODER_FILE = "encoder.safetensors"  # written last by `tbh train`: a run that has it is finished


def as_paths(value: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """One path or several, as a list: "img.png" is one file, never the letters of its name.

    >>> as_paths("img.png"), as_paths(["a.png", Path("b")])
    ([PosixPath('img.png')], [PosixPath('a.png'), PosixPath('b')])
    """
    if isinstance(value, str | os.PathLike):
        return [Path(value)]
    return [Path(v) for v in value]


class Artefact:
    """A report that is also the file or folder it describes (`self.path`): `os.fspath(report)`,
    `str(report)`, `report / "config.json"` and Path's attributes (`report.name`) all read the
    path, so a verb can return its report where callers used to get a bare path."""

    path: Path

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __getattr__(self, name: str):
        if name.startswith("__") or name == "path":  # copies and pickles look up dunders
            raise AttributeError(name)
        return getattr(self.path, name)


def _newest(paths: list[Path]) -> Path | None:
    return max(paths, key=lambda p: p.stat().st_mtime, default=None)


def newest_finished_run(runs: Path = RUNS_DIR) -> tuple[Path, float] | None:
    """(run directory, time its weights were written) of the newest finished run in `runs`."""
    weights = _newest(list(Path(runs).glob(f"*/{ENCODER_FILE}")))
    return None if weights is None else (weights.parent, weights.stat().st_mtime)


def announce_default(kind: str, path: Path, why: str) -> None:
    """Say on stderr which default a command picked: "using run runs/x (newest)"."""
    print(f"using {kind} {printable(path)} ({why})", file=sys.stderr)


def resolve_run(run: str | Path | None) -> Path:
    """The given run directory, or the newest finished one under `runs/` (announced)."""
    if run is not None:
        return Path(run)
    newest = newest_finished_run()
    if newest is None:
        raise TbhError("no trained run in ./runs; train one with `tbh train FEATURES.npy`.")
    announce_default("run", newest[0], "newest")
    return newest[0]


def newest_image_model(models: Path = MODELS_DIR) -> Path | None:
    """The newest ONNX file in `models` that takes images (the default --model)."""
    images = [
        p
        for p in Path(models).glob("*.onnx")
        if not p.name.endswith((FEATURES_SUFFIX, TEXT_SUFFIX))
    ]
    return _newest(images)


def resolve_model(model: str | Path | None) -> Path:
    """The given ONNX file, or the newest `onnx/*.onnx` that takes images (announced)."""
    if model is not None:
        path = Path(model)
        if not path.is_file():
            raise TbhError(f"model file not found: {path}")
        return path
    newest = newest_image_model()
    if newest is None:
        raise TbhError("no image model in ./onnx; export a run with `tbh export`.")
    announce_default("model", newest, "newest")
    return newest


def resolve_store(store: str | Path | None, must_exist: bool = True) -> Path:
    """The given store, or `./codes.zarr` (announced)."""
    path = Path(store) if store is not None else STORE_PATH
    if must_exist and not path.exists():
        raise TbhError(f"no code store at {path}; build one with `tbh index IMAGES_DIR`.")
    if store is None:
        announce_default("store", path, "default")
    return path


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes: how runs, models and stores name their inputs."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()
