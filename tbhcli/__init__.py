"""tbh: Twin-Bottleneck Hashing as a tool — train, export, index, query, evaluate.

The CLI verbs are plain functions here, with the same names and arguments:
`tbhcli.features`, `tbhcli.train`, `tbhcli.export`, `tbhcli.index`, `tbhcli.query`,
`tbhcli.evaluate` (`tbhcli.evaluate_runs` for several runs), `tbhcli.duplicates` (a photo
folder or a store; `tbhcli.find_duplicates` / `tbhcli.find_duplicates_to_remove` give
imagededup's shapes),
`tbhcli.serve`, `tbhcli.check` and `tbhcli.remove` (store upkeep); for notebooks also
`tbhcli.encode` (images or arrays -> packed codes) and `tbhcli.open_store` (a store as one object:
`len`, `search`, `add`, `remove`). They are imported on first use, so `import tbhcli` stays
cheap. The package's layout is the data path (docs/architecture.md): imaging/, hashing/,
training/, deploy/, storage/ with indexing/, search/ over hamming/, evaluation/, then apps/
(query, duplicates, info, serve, demo) and cli.py on top.
"""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_VERBS = {
    "features": "tbhcli.imaging.embed",
    "train": "tbhcli.training.fit",
    "export": "tbhcli.deploy.export",
    "index": "tbhcli.indexing.index",
    "query": "tbhcli.apps.query",
    "evaluate": "tbhcli.evaluation.evaluate",
    "evaluate_runs": "tbhcli.evaluation.evaluate",
    "duplicates": "tbhcli.apps.duplicates_report",
    "find_duplicates": "tbhcli.apps.duplicates_report",
    "find_duplicates_to_remove": "tbhcli.apps.duplicates_report",
    "serve": "tbhcli.apps.serve",
    "check": "tbhcli.storage.check",
    "remove": "tbhcli.storage.prune",
    "encode": "tbhcli.apps.encode",
    "open_store": "tbhcli.apps.store_object",
    "TrainOptions": "tbhcli.training.options",
    "TbhError": "tbhcli.errors",
}
__all__ = [*_VERBS, "__version__"]


def __dir__() -> list[str]:
    return sorted(__all__)


def __getattr__(name: str) -> Any:
    if name in _VERBS:
        return getattr(import_module(_VERBS[name]), name)
    raise AttributeError(f"module 'tbhcli' has no attribute {name!r}")
