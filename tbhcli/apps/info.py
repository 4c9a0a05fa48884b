"""`tbh info`: what a workspace holds — runs, exported models, and the code store."""

from pathlib import Path

from tbhcli.deploy.runtime import model_info
from tbhcli.errors import TbhError
from tbhcli.hashing.runs import CONFIG_FILE, load_config
from tbhcli.storage.store import open_store
from tbhcli.terminal import shown
from tbhcli.workspace import MODELS_DIR, RUNS_DIR, STORE_PATH


def _size(path: Path) -> int:
    """Bytes under `path` (a file or a folder)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _runs(workspace: Path) -> list[dict]:
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
            }
        )
    return runs


def _models(workspace: Path) -> list[dict]:
    models = []
    for path in sorted((workspace / MODELS_DIR).glob("*.onnx")):
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
    runs = Table(title="runs (runs/)", title_justify="left")
    run_columns = ("name", "method", "bits", "feature_dim", "backbone")
    for column in run_columns:
        runs.add_column(column)
    for run in result["runs"]:
        runs.add_row(*(shown(run.get(c, "")) for c in run_columns))
    console.print(runs if result["runs"] else "runs: none (tbh train FEATURES.npy --bits 32)")
    models = Table(title="models (onnx/)", title_justify="left")
    columns = ("file", "method", "bits", "input", "backbone", "image_size")
    for column in columns:
        models.add_column(column)
    for model in result["models"]:
        models.add_row(*(shown(model.get(c, "")) for c in columns))
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
