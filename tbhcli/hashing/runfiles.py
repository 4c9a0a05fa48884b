"""A run folder's plain files, read without torch: config.json (settings), log.jsonl (rows).

`tbh info` lists runs from these alone, so it starts in a fraction of the time a torch import
takes; `hashing.runs` adds the weights (encoder.safetensors) and the modules that use them.
"""

import json
from pathlib import Path

from tbhcli.errors import TbhError

CONFIG_FILE = "config.json"
LOG_FILE = "log.jsonl"


def load_config(path: str | Path) -> dict:
    """The settings a run was trained with (its config.json)."""
    cfg = Path(path) / CONFIG_FILE
    if not cfg.is_file():
        raise TbhError(f"{path} is not a tbh run (no {CONFIG_FILE}); train one with `tbh train`.")
    try:
        return json.loads(cfg.read_text())
    except (OSError, ValueError) as exc:  # unreadable, not UTF-8, not JSON
        raise TbhError(f"cannot read {cfg} ({exc}); retrain with `tbh train --force`.") from None


def read_log(run: str | Path) -> list[dict]:
    """The rows of a run's log.jsonl (loss, validation, evaluation and summary rows)."""
    path = Path(run) / LOG_FILE
    return [json.loads(r) for r in path.read_text().splitlines() if r] if path.is_file() else []
