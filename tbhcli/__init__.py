"""tbh: Twin-Bottleneck Hashing as a tool — train, export, index, query, evaluate.

The CLI verbs are plain functions here, with the same names and arguments:
`tbhcli.train`, `tbhcli.export`, `tbhcli.index`, `tbhcli.query`, `tbhcli.evaluate`, ...
They are imported lazily so that `import tbhcli` stays cheap.
"""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_VERBS = {
    "features": "tbhcli.features",
    "train": "tbhcli.train",
    "export": "tbhcli.export",
    "index": "tbhcli.index",
    "query": "tbhcli.query",
    "evaluate": "tbhcli.evaluate",
    "duplicates": "tbhcli.dedup",
    "info": "tbhcli.workspace",
    "demo": "tbhcli.demo",
}


def __getattr__(name: str) -> Any:
    if name in _VERBS:
        return getattr(import_module(_VERBS[name]), name)
    raise AttributeError(f"module 'tbhcli' has no attribute {name!r}")
