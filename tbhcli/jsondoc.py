"""The JSON documents that `--json` prints: one schema per command, each carrying its version.

Every document is an object whose first key is `"schema": "tbh.COMMAND/N"`; N grows only when
a field changes meaning or disappears (new fields keep N). docs/usage.md describes each schema.
A store row is called `row` in every document.
"""

import json
from pathlib import Path
from typing import Any

SCHEMAS = {
    "features": 1,
    "train": 1,
    "export": 1,
    "index": 1,
    "query": 1,
    "evaluate": 1,
    "duplicates": 1,
    "info": 1,
}


def schema(command: str) -> str:
    """The schema name of `command`'s JSON document, e.g. "tbh.query/1"."""
    return f"tbh.{command}/{SCHEMAS[command]}"


def _plain(value: Any) -> Any:
    """Paths as strings; NumPy scalars and arrays as numbers and lists (NumPy stays unimported)."""
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def document(command: str, body: dict[str, Any]) -> str:
    """`body` as `command`'s JSON document (indented; paths as strings)."""
    return json.dumps({"schema": schema(command), **body}, indent=2, default=_plain)
