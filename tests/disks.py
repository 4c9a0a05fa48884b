"""Disks that refuse writes, for the full-disk tests (the tmpfs itself: conftest.mount_tmpfs)."""

import os
from pathlib import Path


def fill(folder: Path) -> None:
    """Write `folder/filler` until the disk under it is full."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:  # full
        pass
    finally:
        os.close(fd)
