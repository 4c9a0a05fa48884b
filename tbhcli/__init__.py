"""tbh: Twin-Bottleneck Hashing as a tool — train, export, index, query, evaluate.

The CLI verbs are plain functions here, with the same names and arguments:
`tbhcli.features`, `tbhcli.train`, `tbhcli.export`, `tbhcli.index`, `tbhcli.query`,
`tbhcli.evaluate`, `tbhcli.duplicates`. They are imported on first use, so `import tbhcli` stays
cheap. (Their modules are named for the stage, not the verb, so that importing a module never
replaces the verb of the same name on the package.)
"""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_VERBS = {
    "features": "tbhcli.embedding",
    "train": "tbhcli.training",
    "export": "tbhcli.onnx_export",
    "index": "tbhcli.indexing",
    "query": "tbhcli.querying",
    "evaluate": "tbhcli.evaluation",
    "duplicates": "tbhcli.dedup",
}
__all__ = [*_VERBS, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _VERBS:
        return getattr(import_module(_VERBS[name]), name)
    raise AttributeError(f"module 'tbhcli' has no attribute {name!r}")
