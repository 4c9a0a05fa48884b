"""Fixtures several test modules share: tiny image workspaces as `tbh` leaves them."""

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
