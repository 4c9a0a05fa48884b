"""Fault injection on the code store: concurrent writers, damaged chunks and attributes, a full
disk, hostile file names. Each damaged store must fail with one clear line, `tbh check` must list
the damage, and a repaired + re-indexed store must equal a clean index row by row."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from tbhcli.cli import app
from tbhcli.deploy.export import export
from tbhcli.errors import TbhError
from tbhcli.indexing.index import index
from tbhcli.storage import writer as writer_mod
from tbhcli.storage.check import check
from tbhcli.storage.prune import remove
from tbhcli.storage.store import StoreDamaged, open_store
from tbhcli.storage.writer import StoreLock, StoreWriter
from tests.tiny_workspace import make_images, make_lsh_run

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


def contents(store) -> dict:
    """File name -> (code bytes, class name) of every row."""
    s = open_store(store)
    names, classes = s.lookup(np.arange(len(s)))
    return dict(zip(names, zip(map(bytes, s.read_codes()), classes, strict=True), strict=True))


def assert_same_contents(store, clean):
    """The same files with the same codes and classes as a clean index, in any row order."""
    assert len(open_store(store)) == len(open_store(clean))
    assert contents(store) == contents(clean)


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


@pytest.mark.slow
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


@pytest.fixture(scope="module")
def small_chunks(workspace):
    """A clean store of 4-row chunks, so 14 rows span 4 chunks of every array (appends keep
    the chunking recorded in the arrays)."""
    ws, model = workspace
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(writer_mod, "code_chunk_rows", lambda bits: 4)
        patch.setattr(writer_mod, "PATH_CHUNK_ROWS", 4)
        _index(ws, model, ws / "small.zarr")
    return ws, model


def _damage(store, name, how):
    key = {"codes": "codes/c/1/0", "paths": "paths/c/1", "labels": "labels/c/1"}[name]
    chunk = store / key
    if how == "missing":
        chunk.unlink()
    else:
        chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])
    return key


@pytest.mark.parametrize("how", ["missing", "truncated"])
@pytest.mark.parametrize("name", ["codes", "paths", "labels"])
def test_damaged_chunk_is_an_error_then_repaired(small_chunks, tmp_path, name, how):
    """A chunk below rows_committed that is gone or cut is never read as zeros: every reader
    fails with one line naming it, `tbh check` lists it, `--repair` keeps every other row (rows
    0-3 and 8-13; a labels chunk costs no row), and `tbh index` re-adds the rest: the store then
    holds what a clean index holds, file by file."""
    ws, model = small_chunks
    store = tmp_path / "s.zarr"
    _copy_store(ws / "small.zarr", store)
    key = _damage(store, name, how)
    with pytest.raises(StoreDamaged, match=f"{key}.*tbh check --store .* --repair"):
        s = open_store(store)
        (s.read_codes(), s.paths, s.labels, s.lookup(np.arange(len(s))))
    readers = [["check"]] + ([["duplicates", "--radius", "0"]] if name != "labels" else [])
    for command in readers:  # (duplicates reads no labels)
        result = CliRunner().invoke(app, [*command, "--store", str(store)])
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        assert key in result.output
    if not (name == "labels" and how == "truncated"):  # the writer reads no old labels
        with pytest.raises(StoreDamaged, match=key):
            _index(ws, model, store)  # an append would rewrite around the hole
    report = check(store)
    assert any(key in p for p in report.problems), report.problems
    report = check(store, repair=True)
    lost = 0 if name == "labels" else 4  # labels are rebuilt from the paths' class folders
    assert report.problems == [] and report.tables[0].rows == 14 - lost
    assert _index(ws, model, store).added == lost
    assert_same_contents(store, ws / "small.zarr")


BAD_ROWS = [700, 15, "abc", -5, None, True, 3.5]


@pytest.mark.parametrize("rows", BAD_ROWS)
def test_bad_rows_committed_is_one_line_and_repairable(workspace, tmp_path, rows):
    ws, model = workspace
    store = tmp_path / "s.zarr"
    _copy_store(ws / "clean.zarr", store)
    _set_attr(store, "rows_committed", rows)
    with pytest.raises(StoreDamaged, match="rows_committed"):
        open_store(store)
    with pytest.raises(StoreDamaged, match="rows_committed"):
        _index(ws, model, store)
    result = CliRunner().invoke(app, ["duplicates", "--store", str(store)])
    assert result.exit_code == 1 and "rows_committed" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    repaired = CliRunner().invoke(app, ["check", "--store", str(store), "--repair"])
    assert repaired.exit_code == 0 and "repaired" in repaired.output, repaired.output
    assert "OK (store 14 rows)" in repaired.output
    assert _index(ws, model, store).added == 0  # every one of the 14 rows was whole
    assert_same_rows(store, ws / "clean.zarr")


def _copy_store(source, store):
    """A copy of a workspace's store beside a link to its images (its root is ../images)."""
    shutil.copytree(source, store)
    (store.parent / "images").symlink_to(source.parent / "images")


def _set_attr(store, key, value):
    meta = json.loads((store / "zarr.json").read_text())
    meta["attributes"][key] = value
    (store / "zarr.json").write_text(json.dumps(meta))


@pytest.mark.parametrize(
    ("key", "value", "repairable"),
    [("bits", "x", True), ("bits", 12, True), ("model_sha256", None, False), ("classes", 3, True)],
)
def test_bad_attributes_are_one_line(workspace, tmp_path, key, value, repairable):
    ws, _ = workspace
    store = tmp_path / "s.zarr"
    _copy_store(ws / "clean.zarr", store)
    _set_attr(store, key, value)
    with pytest.raises(StoreDamaged, match=key):
        open_store(store)
    if not repairable:  # no evidence restores it: refused, nothing changed
        refused = f"cannot be repaired: store: {key}.*nothing was changed"
        with pytest.raises(TbhError, match=refused):
            check(store, repair=True)
        return
    report = check(store, repair=True)
    assert report.problems == [], report.problems
    assert_same_rows(store, ws / "clean.zarr")


def test_rows_of_gone_files_are_removed_and_the_rest_unchanged(workspace, tmp_path):
    ws, model = workspace
    shutil.copytree(ws / "images", tmp_path / "images")
    store = tmp_path / "s.zarr"
    index(tmp_path / "images", store=store, model=model, workers=0, device="cpu")
    before = open_store(store)
    paths, codes, labels = before.paths.tolist(), before.read_codes(), before.labels
    gone = ["cat/img002.png", "img001.png"]  # one labelled, one without a class
    for name in gone:
        (tmp_path / "images" / name).unlink()
    result = CliRunner().invoke(app, ["remove", "--store", str(store)])
    assert result.exit_code == 0 and "2 removed (file gone), 12 kept" in result.output
    keep = [i for i, p in enumerate(paths) if p not in gone]
    after = open_store(store)
    assert after.paths.tolist() == [paths[i] for i in keep]
    np.testing.assert_array_equal(after.read_codes(), codes[keep])  # byte for byte
    np.testing.assert_array_equal(after.labels, labels[keep])
    assert not list(tmp_path.glob(".s.zarr.new")) and not list(tmp_path.glob(".s.zarr.old"))
    assert check(store).problems == []
    assert _index_at(tmp_path, model, store).added == 0  # nothing to re-add, nothing doubled
    (tmp_path / "images" / "dog" / "img001.png").unlink()
    args = ["index", str(tmp_path / "images"), "--store", str(store), "--model", str(model)]
    pruned = CliRunner().invoke(app, [*args, "--prune", "--workers", "0", "--device", "cpu"])
    assert pruned.exit_code == 0 and "1 removed (file gone), 11 kept" in pruned.output
    assert ": 11 images; 0 added" in " ".join(pruned.output.split())
    assert len(open_store(store)) == 11
    assert "dog/img001.png" not in open_store(store).paths.tolist()


def _index_at(ws, model, store, **kw):
    return index(ws / "images", store=store, model=model, workers=0, device="cpu", **kw)


def test_remove_killed_between_the_renames_is_completed(workspace, tmp_path, monkeypatch):
    ws, model = workspace
    shutil.copytree(ws / "images", tmp_path / "images")
    store = tmp_path / "s.zarr"
    _index_at(tmp_path, model, store)
    (tmp_path / "images" / "dog" / "img000.png").unlink()
    real, calls = os.rename, []

    def dying(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise Killed  # the old store moved aside, the new one not yet in place
        return real(src, dst)

    monkeypatch.setattr(os, "rename", dying)
    with pytest.raises(Killed):
        remove(store)
    monkeypatch.setattr(os, "rename", real)
    assert not store.exists()
    _index_at(tmp_path, model, store)  # the next writer finishes the swap first
    assert "dog/img000.png" not in open_store(store).paths.tolist()
    assert len(open_store(store)) == 13 and not (tmp_path / ".s.zarr.old").exists()


def test_a_moved_workspace_keeps_working(workspace, tmp_path, monkeypatch):
    """The store records its root relative to itself: a copied workspace indexes and finds
    its own images; an absolute root (an old store, or a folder elsewhere) is re-pointed."""
    ws, model = workspace
    first = tmp_path / "a"
    shutil.copytree(ws / "images", first / "images")
    _index_at(first, model, first / "codes.zarr")
    assert open_store(first / "codes.zarr").attrs["root"] == "../images"
    shutil.copytree(first, tmp_path / "b")
    shutil.rmtree(first)
    monkeypatch.chdir(tmp_path / "b")
    report = index(Path("images"), model=model, workers=0, device="cpu")
    assert (report.added, report.tables[0].already) == (0, 14)
    assert open_store("codes.zarr").root == (tmp_path / "b" / "images")
    # a folder outside the workspace is recorded absolute; after it moves, --root re-points
    outside = tmp_path / "elsewhere"
    (tmp_path / "b" / "images").rename(outside)
    with pytest.raises(TbhError, match="--root"):
        index(outside, model=model, workers=0, device="cpu")
    with pytest.raises(TbhError, match="holds none of"):
        index(tmp_path, model=model, workers=0, device="cpu", repoint=True)
    assert index(outside, model=model, workers=0, device="cpu", repoint=True).added == 0
    assert open_store("codes.zarr").attrs["root"] == str(outside)
    assert_same_rows(Path("codes.zarr"), ws / "clean.zarr")


def test_store_opens_in_xarray_and_dask(workspace):
    import dask.array as da
    import xarray as xr

    ws, _ = workspace
    clean = open_store(ws / "clean.zarr")
    ds = xr.open_zarr(ws / "clean.zarr", consolidated=False)
    assert ds["codes"].dims == ("row", "byte") and ds["labels"].dims == ("row",)
    assert ds.attrs["rows_committed"] == 14 and "packed" in ds["codes"].attrs["long_name"]
    np.testing.assert_array_equal(ds["codes"].values, clean.read_codes())
    assert ds["paths"].values.tolist() == clean.paths.tolist()
    np.testing.assert_array_equal(ds["labels"].values, clean.labels)
    codes = da.from_zarr(str(ws / "clean.zarr"), component="codes")
    np.testing.assert_array_equal(codes.compute(), clean.read_codes())


def test_non_utf8_file_name_is_stored_losslessly(workspace, tmp_path):
    """`bad\\xffbytes.png` (not UTF-8) is indexed, found again by a rerun, printed escaped by
    query and duplicates, and given back as the very same file name."""
    ws, model = workspace
    shutil.copytree(ws / "images", tmp_path / "images")
    shutil.copy(
        tmp_path / "images" / "img000.png", os.fsencode(tmp_path / "images") + b"/bad\xffbytes.png"
    )
    store = tmp_path / "s.zarr"
    assert _index_at(tmp_path, model, store).added == 15
    assert _index_at(tmp_path, model, store).added == 0
    s = open_store(store)
    row = s.paths.tolist().index("bad\x00ffbytes.png")
    name = s.names(np.array([row]))[0]
    assert os.fsencode(name) == b"bad\xffbytes.png" and (s.root / name).is_file()
    args = ["--store", str(store)]
    for command in (["duplicates", "--radius", "0"], ["duplicates", "--radius", "0", "--json"]):
        result = CliRunner().invoke(app, command + args)
        assert result.exit_code == 0, result.output
        assert "bad\\xffbytes.png" in result.output or "bad\\udcffbytes.png" in result.output
    (s.root / name).unlink()
    assert remove(store).removed["store"] == [name]


@pytest.fixture
def tmpfs(mount_tmpfs):
    """A 1.6 MB tmpfs: room for one 1 MiB codes chunk, not for rewriting it (needs root)."""
    return mount_tmpfs("1600k")


def test_full_disk_and_read_only_store_are_one_line(workspace, tmpfs, tmp_path):
    ws, model = workspace
    store = tmpfs / "s.zarr"
    args = ["index", str(ws / "images"), "--store", str(store), "--model", str(model)]
    args += ["--batch-size", "4", "--workers", "0", "--device", "cpu"]
    full = CliRunner().invoke(app, args)
    assert full.exit_code == 1 and "Traceback" not in full.output, full.output
    assert "No space left on device; the store is still consistent at 4 committed rows" in (
        " ".join(full.output.split())
    )
    assert not list(tmpfs.rglob("*.partial"))
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    read_only = CliRunner().invoke(app, args)
    assert read_only.exit_code == 1 and "Read-only file system" in read_only.output
    assert "the store is unchanged" in read_only.output and "Traceback" not in read_only.output
    assert CliRunner().invoke(app, ["duplicates", "--store", str(store)]).exit_code == 0
    shutil.copytree(store, tmp_path / "s.zarr")  # resumed on a disk with room
    _index(ws, model, tmp_path / "s.zarr")
    assert_same_rows(tmp_path / "s.zarr", ws / "clean.zarr")


def test_write_errors_name_the_committed_rows(workspace, tmp_path, monkeypatch):
    """Without root (no tmpfs): a write refused by the OS mid-run, simulated in zarr."""
    import errno

    from zarr.storage import _local

    ws, model = workspace
    store = tmp_path / "s.zarr"
    real = _local._put
    calls = []

    def refusing(path, value, exclusive=False):
        calls.append(path)
        if len(calls) > 25:  # creation and the first batches went through
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, value, exclusive)

    monkeypatch.setattr(_local, "_put", refusing)
    with pytest.raises(TbhError, match=r"still consistent at \d+ committed rows") as info:
        _index(ws, model, store)
    committed = int(str(info.value).split("consistent at ")[1].split()[0])
    monkeypatch.setattr(_local, "_put", real)
    assert len(open_store(store)) == committed
    _index(ws, model, store)
    assert_same_rows(store, ws / "clean.zarr")
