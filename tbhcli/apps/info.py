"""`tbh info`: what a workspace holds — runs, exported models, and the code store.

It reads config and log files and model metadata only (no torch import): about a second.
"""

from datetime import datetime
from pathlib import Path

from tbhcli.deploy.runtime import model_info
from tbhcli.errors import TbhError
from tbhcli.hashing.runfiles import CONFIG_FILE, load_config, read_log
from tbhcli.storage.store import open_store
from tbhcli.terminal import shown
from tbhcli.workspace import (
    ENCODER_FILE,
    MODELS_DIR,
    RUNS_DIR,
    STORE_PATH,
    TEXT_SUFFIX,
    newest_finished_run,
    newest_image_model,
)


def _size(path: Path) -> int:
    """Bytes under `path` (a file or a folder)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _when(path: Path) -> str | None:
    """A file's modification time, local ISO minutes (None when there is no such file)."""
    if not path.is_file():
        return None
    return datetime.fromtimestamp(path.stat().st_mtime).isoformat(" ", "minutes")


def _score(run: Path) -> dict | None:
    """The kept method's held-out score from the run's summary row: {metric, value}, or None."""
    try:
        rows = [r["summary"] for r in read_log(run) if "summary" in r]
    except (OSError, ValueError):
        return None
    if not rows or not rows[-1].get("metric"):
        return None
    summary = rows[-1]
    value = (summary.get("scores") or {}).get(summary.get("kept"), {}).get(summary["metric"])
    return None if value is None else {"metric": summary["metric"], "value": value}


def _runs(workspace: Path) -> list[dict]:
    newest = newest_finished_run(workspace / RUNS_DIR)
    default = newest[0] if newest else None
    runs = []
    for cfg in sorted((workspace / RUNS_DIR).glob(f"*/{CONFIG_FILE}")):
        try:
            config = load_config(cfg.parent)
        except TbhError as exc:
            runs.append({"name": cfg.parent.name, "error": str(exc)})
            continue
        runs.append(
            {
                "name": cfg.parent.name,
                "method": config.get("method"),
                "bits": config.get("bits"),
                "feature_dim": config.get("feature_dim"),
                "backbone": config.get("backbone"),
                "score": _score(cfg.parent),
                "trained": _when(cfg.parent / ENCODER_FILE),  # None: training did not finish
                "default": cfg.parent == default,
            }
        )
    return runs


def _models(workspace: Path) -> list[dict]:
    default = newest_image_model(workspace / MODELS_DIR)
    models = []
    for path in sorted((workspace / MODELS_DIR).glob("*.onnx")):
        if path.name.endswith(TEXT_SUFFIX):  # shown as its images model's `text` column
            continue
        try:
            meta = model_info(path)
        except TbhError as exc:
            models.append({"file": path.name, "error": str(exc)})
            continue
        models.append(
            {
                "file": path.name,
                "method": meta.method,
                "bits": meta.bits,
                "input": meta.input,
                "backbone": meta.backbone,
                "image_size": meta.image_size,
                "size_bytes": _size(path),
                "sha256": meta.sha256,
                "exported": _when(path),
                "default": path == default,
                "text_model": path.with_name(path.name[: -len(".onnx")] + TEXT_SUFFIX).is_file(),
            }
        )
    return models


def _store(path: Path) -> dict:
    try:
        store = open_store(path)
        queries = store.queries
    except TbhError as exc:  # a damaged store (or query set) is reported, not fatal
        return {"path": str(path), "error": str(exc)}
    return {
        "path": str(path),
        "rows": len(store),
        "queries": len(queries) if queries is not None else 0,
        "bits": store.bits,
        "model": store.attrs.get("model"),
        "model_sha256": store.attrs.get("model_sha256"),
        "backbone": store.attrs.get("backbone"),
        "classes": len(store.classes),
        "root": str(store.root),
        "size_bytes": _size(path),
        "updated": store.attrs.get("updated"),
        "default": path.name == STORE_PATH.name,
    }


def info(workspace: Path = Path(".")) -> dict:
    """Runs (method, bits), models (metadata) and code stores (rows, bits, model) of `workspace`.

    Stores are every `*.zarr` folder in it (the default `codes.zarr` first).
    """
    workspace = Path(workspace)
    if not workspace.is_dir():
        raise TbhError(f"workspace folder not found: {workspace}")
    stores = sorted(
        (p for p in workspace.glob("*.zarr") if p.is_dir()),
        key=lambda p: (p.name != STORE_PATH.name, p.name),
    )
    return {
        "workspace": str(workspace.resolve()),
        "runs": _runs(workspace),
        "models": _models(workspace),
        "stores": [_store(p) for p in stores],
    }


def print_info(result: dict, console) -> None:
    """Rich tables of `info()`'s runs and models, and a summary line of the store."""
    from rich.table import Table

    console.print(f"workspace {shown(result['workspace'])}")
    runs = Table(title="runs (runs/) · * the default --run (newest finished)", title_justify="left")
    for column in ("name", "method", "bits", "backbone", "held-out score", "trained"):
        runs.add_column(column)
    for run in result["runs"]:
        if "error" in run:
            runs.add_row(shown(run["name"]), shown(run["error"]))
            continue
        score = run["score"]
        runs.add_row(
            shown(run["name"]) + (" *" if run["default"] else ""),
            shown(run["method"]),
            shown(run["bits"]),
            shown(run["backbone"] or "(features)"),
            f"{score['metric']} {score['value']:.4f}" if score else "",
            shown(run["trained"] or "unfinished"),
        )
    console.print(runs if result["runs"] else "runs: none (tbh train FEATURES.npy --bits 32)")
    models = Table(title="models (onnx/) · * the default --model (newest)", title_justify="left")
    columns = ("file", "method", "bits", "input", "backbone", "image_size", "exported")
    columns += ("text",)  # a text model beside it: `tbh query --text` works
    for column in columns:
        models.add_column(column)
    for model in result["models"]:
        cells = [shown(model.get(c, "")) for c in columns[:-1]]
        cells.append("yes" if model.get("text_model") else "")
        cells[0] += " *" if model.get("default") else ""
        models.add_row(*cells)
    console.print(models if result["models"] else "models: none (tbh export)")
    if not result["stores"]:
        console.print("stores: none (tbh index IMAGES_DIR)")
    for store in result["stores"]:
        if "error" in store:
            console.print(f"store {shown(store['path'])}: {shown(store['error'])}")
            continue
        console.print(
            f"store {shown(store['path'])}: {store['rows']} images ({store['queries']} queries), "
            f"{store['bits']} bits, model {shown(store['model'])}, {store['classes']} classes, "
            f"{store['size_bytes'] / 1e6:.1f} MB, updated {shown(store['updated'])}"
        )
