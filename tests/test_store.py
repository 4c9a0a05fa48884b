import numpy as np
import pytest
import zarr

from tbhcli.errors import TbhError
from tbhcli.storage import store as store_mod
from tbhcli.storage.store import open_store
from tbhcli.storage.writer import StoreLock, open_writer


def _writer(path, root, sha="a" * 64, table=None, bits=16):
    return open_writer(
        path,
        bits=bits,
        model_sha256=sha,
        model="m.onnx",
        backbone="tiny",
        image_size=32,
        root=root,
        table=table,
    )


def _rows(n, start=0, bits=16):
    rng = np.random.default_rng(start)
    codes = rng.integers(0, 256, (n, bits // 8), dtype=np.uint8)
    return codes, [f"c{i % 3}/img{i}.png" for i in range(start, start + n)]


def test_append_and_read_back_across_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(store_mod, "CODE_CHUNK_BYTES", 1)  # 1024-row chunks
    w = _writer(tmp_path / "s.zarr", tmp_path)
    all_codes, all_paths = [], []
    for start in range(0, 2500, 700):
        codes, paths = _rows(min(700, 2500 - start), start)
        w.append(codes, paths, w.label_ids([p.split("/")[0] for p in paths]))
        all_codes.append(codes)
        all_paths += paths
    s = open_store(tmp_path / "s.zarr")
    expected = np.concatenate(all_codes)
    assert len(s) == 2500 and s.bits == 16
    np.testing.assert_array_equal(s.read_codes(), expected)
    np.testing.assert_array_equal(s.read_codes(1000, 1030), expected[1000:1030])
    blocks = list(s.codes())
    assert [start for start, _ in blocks] == [0, 1024, 2048]
    np.testing.assert_array_equal(np.concatenate([b for _, b in blocks]), expected)
    assert s.paths.tolist() == all_paths
    assert s.classes == ["c0", "c1", "c2"]
    np.testing.assert_array_equal(s.labels, np.arange(2500) % 3)
    expected_rows = ([all_paths[5], all_paths[1], all_paths[5]], ["c2", "c1", "c2"])
    assert s.lookup(np.array([5, 1, 5])) == expected_rows


def test_layout_is_plain_zarr(tmp_path):
    w = _writer(tmp_path / "s.zarr", tmp_path)
    codes, paths = _rows(10)
    w.append(codes, paths, w.label_ids([None] * 10))
    g = zarr.open_group(tmp_path / "s.zarr", mode="r")
    attrs = dict(g.attrs)
    for key in ("format_version", "bits", "model_sha256", "model", "backbone", "image_size"):
        assert key in attrs
    for key in ("root", "rows_committed", "created", "updated", "tbh_version", "classes"):
        assert key in attrs
    assert attrs["rows_committed"] == 10 and attrs["root"] == ".."  # the folder holding the store
    assert g["codes"].dtype == np.uint8 and g["codes"].shape == (10, 2)
    assert g["labels"].dtype == np.int32 and (g["labels"][:] == -1).all()
    assert g["paths"][:].tolist() == paths


def test_uncommitted_rows_are_invisible_and_overwritten(tmp_path):
    w = _writer(tmp_path / "s.zarr", tmp_path)
    codes, paths = _rows(10)
    w.append(codes, paths, w.label_ids([None] * 10))
    # an interrupted append: arrays grown and written, commit marker not bumped
    for name, value in (("codes", np.full((5, 2), 255, np.uint8)), ("paths", ["junk"] * 5)):
        array = w.group[name]
        array.resize((15, *array.shape[1:]))
        array[10:15] = np.asarray(value, dtype=object if name == "paths" else None)
    (tmp_path / "s.zarr" / "codes" / "c" / "0" / "0.deadbeef.partial").write_bytes(b"x")
    s = open_store(tmp_path / "s.zarr")
    assert len(s) == 10 and len(s.read_codes()) == 10 and "junk" not in s.paths.tolist()
    w = _writer(tmp_path / "s.zarr", tmp_path)  # reopening truncates the garbage
    assert w.group["codes"].shape == (10, 2)
    assert not list((tmp_path / "s.zarr").rglob("*.partial"))
    more, more_paths = _rows(3, 100)
    w.append(more, more_paths, w.label_ids([None] * 3))
    s = open_store(tmp_path / "s.zarr")
    np.testing.assert_array_equal(s.read_codes(), np.concatenate([codes, more]))
    assert s.paths.tolist() == paths + more_paths


def test_refuses_another_model_and_another_folder(tmp_path):
    _writer(tmp_path / "s.zarr", tmp_path / "a")
    with pytest.raises(TbhError, match="another model"):
        _writer(tmp_path / "s.zarr", tmp_path / "a", sha="b" * 64)
    with pytest.raises(TbhError, match="holds images from"):
        _writer(tmp_path / "s.zarr", tmp_path / "b")


def test_queries_table_shares_the_class_list(tmp_path):
    db = _writer(tmp_path / "s.zarr", tmp_path / "db")
    codes, paths = _rows(4)
    db.append(codes, paths, db.label_ids(["cat", "dog", "cat", None]))
    q = _writer(tmp_path / "s.zarr", tmp_path / "q", table="queries")
    q.append(codes[:2], ["x.png", "y.png"], q.label_ids(["emu", "dog"]))
    s = open_store(tmp_path / "s.zarr")
    assert s.classes == ["cat", "dog", "emu"] and s.queries.classes == s.classes
    assert len(s) == 4 and len(s.queries) == 2
    np.testing.assert_array_equal(s.labels, [0, 1, 0, -1])
    np.testing.assert_array_equal(s.queries.labels, [2, 1])


def test_not_a_store(tmp_path):
    with pytest.raises(TbhError, match="no code store"):
        open_store(tmp_path / "missing.zarr")
    zarr.open_group(tmp_path / "other.zarr", mode="w")
    with pytest.raises(TbhError, match="not a tbh code store"):
        open_store(tmp_path / "other.zarr")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file.txt").write_text("x")
    with pytest.raises(TbhError, match="not a code store"):
        _writer(tmp_path / "junk", tmp_path)
    (tmp_path / "file.zarr").write_text("x")
    with pytest.raises(TbhError, match="not a code store"), StoreLock(tmp_path / "file.zarr"):
        pass


def test_lock_keeps_a_second_writer_out(tmp_path):
    first = StoreLock(tmp_path / "s.zarr").__enter__()
    with pytest.raises(TbhError, match="another tbh command"), StoreLock(tmp_path / "s.zarr"):
        pass
    first.__exit__(None, None, None)
    with StoreLock(tmp_path / "s.zarr"):  # released on exit
        pass


def test_interrupted_creation_starts_over(tmp_path, monkeypatch):
    def dying(group, name, **kwargs):
        raise KeyboardInterrupt  # killed between creating the group and its arrays' attrs

    real = zarr.Group.create_array
    monkeypatch.setattr(zarr.Group, "create_array", dying)
    with pytest.raises(KeyboardInterrupt):
        _writer(tmp_path / "s.zarr", tmp_path)
    with pytest.raises(KeyboardInterrupt):
        _writer(tmp_path / "s.zarr", tmp_path, table="queries")
    with pytest.raises(TbhError, match="interrupted"):
        open_store(tmp_path / "s.zarr")
    monkeypatch.setattr(zarr.Group, "create_array", real)
    w = _writer(tmp_path / "s.zarr", tmp_path)
    codes, paths = _rows(2)
    w.append(codes, paths, w.label_ids([None, None]))
    monkeypatch.setattr(zarr.Group, "create_array", dying)
    with pytest.raises(KeyboardInterrupt):
        _writer(tmp_path / "s.zarr", tmp_path, table="queries")
    monkeypatch.setattr(zarr.Group, "create_array", real)
    q = _writer(tmp_path / "s.zarr", tmp_path, table="queries")
    q.append(codes[:1], paths[:1], q.label_ids([None]))
    s = open_store(tmp_path / "s.zarr")
    assert len(s) == 2 and len(s.queries) == 1


def test_unreadable_store_is_a_user_error(tmp_path, monkeypatch):
    store = tmp_path / "s.zarr"
    writer = _writer(store, tmp_path)
    codes, paths = _rows(3)
    writer.append(codes, paths, writer.label_ids([p.split("/")[0] for p in paths]))

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    # Root reads any file, so the refusal is simulated where zarr opens the group.
    monkeypatch.setattr(zarr, "open_group", denied)
    with pytest.raises(TbhError, match="Permission denied"):
        open_store(store)
