"""Fault injection on the code store: concurrent writers, damaged chunks and attributes, a full
disk, hostile file names. Each damaged store must fail with one clear line, `tbh check` must list
the damage, and a repaired + re-indexed store must equal a clean index row by row."""

import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import zarr
from tiny_workspace import make_images, make_lsh_run

from tbhcli.deploy.export import export
from tbhcli.errors import TbhError
from tbhcli.storage import writer as writer_mod
from tbhcli.storage.indexing import index
from tbhcli.storage.store import open_store
from tbhcli.storage.writer import StoreLock, StoreWriter

CLASSES = {"cat": 6, "dog": 5, "": 3}  # 14 images, three without a class


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A model, an image folder and a clean store of it to compare damaged stores with."""
    ws = tmp_path_factory.mktemp("ws")
    model = export(make_lsh_run(ws / "runs" / "lsh32"), out=ws / "onnx" / "lsh32.onnx")
    make_images(ws / "images", CLASSES)
    _index(ws, model, ws / "clean.zarr")
    return ws, model


def _index(ws, model, store, **kw):
    kw = {"batch_size": 4, "workers": 0, "device": "cpu"} | kw
    return index(ws / "images", store=store, model=model, **kw)


class Killed(Exception):
    """Stands in for the process dying at a given point."""


def _dies_after(n, original):
    calls = []

    def wrapper(*args, **kwargs):
        if len(calls) == n:
            raise Killed
        calls.append(1)
        return original(*args, **kwargs)

    return wrapper


def assert_same_rows(store, clean):
    """Row by row: the same paths, codes and class names as a clean index."""
    a, b = open_store(store), open_store(clean)
    assert len(a) == len(b)
    assert a.paths.tolist() == b.paths.tolist()
    np.testing.assert_array_equal(a.read_codes(), b.read_codes())
    assert [a.classes[i] if i >= 0 else None for i in a.labels] == [
        b.classes[i] if i >= 0 else None for i in b.labels
    ]


def test_second_writer_during_creation_is_refused(workspace, tmp_path, monkeypatch):
    """The lock is held while the store is created, so nobody sees (or clears) a half store."""
    ws, model = workspace
    real = writer_mod.create_table
    seen = []

    def racing(group, bits, attrs):
        with pytest.raises(TbhError, match="another tbh command"), StoreLock(tmp_path / "s.zarr"):
            pass
        seen.append(1)
        return real(group, bits, attrs)

    monkeypatch.setattr(writer_mod, "create_table", racing)
    _index(ws, model, tmp_path / "s.zarr")
    assert seen
    assert_same_rows(tmp_path / "s.zarr", ws / "clean.zarr")


@pytest.mark.parametrize("existing", [False, True])
def test_two_processes_start_at_the_same_instant(workspace, tmp_path, monkeypatch, existing):
    """Two real `tbh index` processes released together on a new (or an existing) store: one
    writes, the other exits 1 with one line; the store then equals a clean index."""
    ws, model = workspace
    store = tmp_path / "s.zarr"
    if existing:  # a store holding the first batch only
        with monkeypatch.context() as patch:
            patch.setattr(StoreWriter, "append", _dies_after(1, StoreWriter.append))
            with pytest.raises(Killed):
                _index(ws, model, store)
        assert len(open_store(store)) == 4
    go = tmp_path / "go"
    script = textwrap.dedent(
        f"""
        import os, sys, time
        while not os.path.exists({str(go)!r}):
            time.sleep(0.001)
        from tbhcli.cli import main
        sys.argv = ["tbh", "index", {str(ws / "images")!r}, "--store", {str(store)!r},
                    "--model", {str(model)!r}, "--batch-size", "2", "--workers", "0",
                    "--device", "cpu"]
        main()
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    time.sleep(1.5)  # both imported and waiting
    go.touch()
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    codes = sorted(rc for rc, _ in results)
    for rc, err in results:
        assert "Traceback" not in err, err
        if rc == 1:
            assert "another tbh command is writing" in err
    assert codes in ([0, 0], [0, 1]), results  # [0, 0]: the second came after the first ended
    assert_same_rows(store, ws / "clean.zarr")


def test_half_created_store_is_created_again(workspace, tmp_path):
    """A store left with attributes but no arrays (a creation killed or raced) is recreated."""
    ws, model = workspace
    group = zarr.open_group(tmp_path / "s.zarr", mode="w", zarr_format=3)
    group.attrs.update({"format_version": 1, "rows_committed": 0, "bits": 32})
    _index(ws, model, tmp_path / "s.zarr")
    assert_same_rows(tmp_path / "s.zarr", ws / "clean.zarr")
