"""Fixtures several test modules share: tiny image workspaces as `tbh` leaves them, and small
tmpfs mounts for full-disk and read-only tests."""

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.tiny_workspace import ImageWorkspace, build_image_workspace


@pytest.fixture(scope="module")
def indexed_workspace(tmp_path_factory) -> ImageWorkspace:
    """16-bit codes (distances tie often) of cat/dog/root images in ./codes.zarr, plus 4 query
    images in queries/ that are not in the store. Shared by a module: do not modify it."""
    root = tmp_path_factory.mktemp("ws")
    return build_image_workspace(root, bits=16, query_classes={"q": 4})


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """An empty workspace folder that is the current directory."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def mount_tmpfs(tmp_path) -> Iterator[Callable[[str], Path]]:
    """`mount_tmpfs("256k")` -> an empty tmpfs of that size under tmp_path, unmounted after the
    test (needs root, as CI runs: a real ENOSPC / EROFS, not a simulated one)."""
    if os.geteuid() != 0:
        pytest.skip("a small tmpfs for a full-disk or read-only test needs root (mount)")
    mounts: list[Path] = []

    def mount(size: str) -> Path:
        path = tmp_path / f"tmpfs{len(mounts)}"
        path.mkdir()
        cmd = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)]
        done = subprocess.run(cmd, capture_output=True)
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        mounts.append(path)
        return path

    yield mount
    for path in mounts:
        subprocess.run(["umount", str(path)], check=True)
