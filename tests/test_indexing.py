import subprocess
import sys
import textwrap

import numpy as np
import psutil
import pytest
import zarr
from typer.testing import CliRunner

from tbhcli.cli import app
from tbhcli.deploy.export import export
from tbhcli.errors import TbhError
from tbhcli.imaging.decode import decode_batches
from tbhcli.indexing.index import index
from tbhcli.storage.store import open_store
from tbhcli.storage.writer import StoreWriter
from tests.tiny_workspace import (
    build_image_workspace,
    make_images,
    make_lsh_run,
    reference_codes,
)

CLASSES = {"cat": 9, "dog": 8, "emu": 7}  # 24 images


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A run, its exported model and an image folder with class subfolders (not indexed)."""
    ws = build_image_workspace(tmp_path_factory.mktemp("ws"), 32, CLASSES, index=False)
    return ws.root, ws.run, ws.model, ws.images


def _index(ws, model, store, **kw):
    kw = {"batch_size": 5, "workers": 0, "device": "cpu"} | kw
    return index(ws / "images", store=store, model=model, **kw)


def _check_complete(store_path, ws, run, files):
    """Every image exactly once, in folder order, with the reference pipeline's codes."""
    s = open_store(store_path)
    rel = [f.relative_to(ws / "images").as_posix() for f in files]
    assert s.paths.tolist() == rel
    np.testing.assert_array_equal(s.read_codes(), reference_codes(run, files))
    assert s.group["codes"].shape[0] == len(s)


def test_index_equals_reference_pipeline(workspace, tmp_path):
    ws, run, model, files = workspace
    report = _index(ws, model, tmp_path / "s.zarr", workers=2)
    assert report.added == report.rows == 24 and report.provider == "CPUExecutionProvider"
    _check_complete(tmp_path / "s.zarr", ws, run, files)
    s = open_store(tmp_path / "s.zarr")
    assert s.classes == ["cat", "dog", "emu"]
    np.testing.assert_array_equal(s.labels, [0] * 9 + [1] * 8 + [2] * 7)
    assert s.attrs["model"] == "lsh32.onnx" and s.attrs["bits"] == 32
    assert s.attrs["root"] == str((ws / "images").resolve())


def test_progress_goes_to_the_callback_and_the_library_draws_nothing(workspace, tmp_path, capfd):
    """Issue 22: the library took no progress callback and drew its own bars."""
    ws, _, model, files = workspace
    calls = []
    _index(ws, model, tmp_path / "s.zarr", progress=lambda *call: calls.append(call))
    label = f"indexing {ws / 'images'}"
    assert calls[0] == (label, 0, len(files)) and calls[-1] == (label, len(files), len(files))
    assert [done for _, done, _ in calls] == sorted(done for _, done, _ in calls)
    assert len(calls) == 1 + -(-len(files) // 5)  # the start, then one call a batch of 5
    _index(ws, model, tmp_path / "quiet.zarr")  # without a callback: no bar on the terminal
    err = capfd.readouterr().err  # (log lines may show, when a `tbh` command installed them)
    assert "images/s" not in err and "━" not in err


def test_rerun_adds_only_new_images(tmp_path):
    run = make_lsh_run(tmp_path / "run")
    model = export(run, out=tmp_path / "m.onnx")
    first = make_images(tmp_path / "images", {"a": 4, "": 2})  # two at the root: label -1
    assert _index(tmp_path, model, tmp_path / "s.zarr").added == 6
    again = _index(tmp_path, model, tmp_path / "s.zarr")
    assert (again.added, again.tables[0].already) == (0, 6)
    more = make_images(tmp_path / "images", {"a": 2, "b": 3}, seed=1, start=50)
    assert _index(tmp_path, model, tmp_path / "s.zarr").added == 5
    s = open_store(tmp_path / "s.zarr")
    assert len(s) == 11 and len(set(s.paths.tolist())) == 11
    assert s.classes == ["a", "b"]
    np.testing.assert_array_equal(s.read_codes(), reference_codes(run, first + more))
    labels = dict(zip(s.paths.tolist(), s.labels.tolist(), strict=True))
    assert labels["img000.png"] == -1 and labels["b/img050.png"] == 1


def test_unreadable_files_are_skipped_counted_and_listed(tmp_path):
    run = make_lsh_run(tmp_path / "run")
    model = export(run, out=tmp_path / "m.onnx")
    good = make_images(tmp_path / "images", {"a": 3})
    bad = tmp_path / "images" / "a"
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "text.png").write_text("not an image")
    (bad / "truncated.png").write_bytes(good[0].read_bytes()[:200])
    (bad / "notes.txt").write_text("not an image extension: ignored")
    errors = tmp_path / "logs" / "errors.txt"  # a folder that --errors creates
    report = _index(tmp_path, model, tmp_path / "s.zarr", errors=errors)
    assert report.added == 3
    skipped = sorted(p for p, _ in report.tables[0].errors)
    assert skipped == ["a/empty.jpg", "a/text.png", "a/truncated.png"]
    listed = errors.read_text().splitlines()
    assert sorted(line.split("\t")[0] for line in listed) == [
        str(tmp_path / "images" / p) for p in skipped
    ]
    stored = open_store(tmp_path / "s.zarr").read_codes()
    np.testing.assert_array_equal(stored, reference_codes(run, good))


def test_store_of_another_model_refuses_to_mix(workspace, tmp_path):
    ws, run, model, _ = workspace
    _index(ws, model, tmp_path / "s.zarr")
    other = export(make_lsh_run(tmp_path / "other", seed=7), out=tmp_path / "other.onnx")
    with pytest.raises(TbhError, match="another model"):
        _index(ws, other, tmp_path / "s.zarr")
    assert len(open_store(tmp_path / "s.zarr")) == 24


def test_features_model_indexes_through_its_recorded_backbone(workspace, tmp_path):
    ws, run, _, files = workspace
    features_model = export(run, out=tmp_path / "f.onnx", input="features")
    _index(ws, features_model, tmp_path / "s.zarr")
    _check_complete(tmp_path / "s.zarr", ws, run, files)
    assert open_store(tmp_path / "s.zarr").attrs["backbone"] == "tiny"
    with pytest.raises(TbhError, match="--dask"):
        _index(ws, features_model, tmp_path / "d.zarr", dask="local")


def test_features_model_without_a_backbone_cannot_index_images(workspace, tmp_path):
    ws, _, _, _ = workspace
    run = make_lsh_run(tmp_path / "run")
    config = (run / "config.json").read_text().replace('"backbone": "tiny"', '"backbone": null')
    (run / "config.json").write_text(config)
    features_model = export(run, out=tmp_path / "f.onnx", input="features")
    with pytest.raises(TbhError, match="takes features and records no backbone"):
        _index(ws, features_model, tmp_path / "s.zarr")


def test_negative_workers_is_a_user_error(workspace, tmp_path):
    ws, _, model, _ = workspace
    with pytest.raises(TbhError, match="--workers"):
        _index(ws, model, tmp_path / "s.zarr", workers=-1)
    assert not (tmp_path / "s.zarr").exists()


class Killed(Exception):
    """Stands in for the process dying at a given point."""


def _fail_on_call(n, original):
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise Killed
        return original(*args, **kwargs)

    return wrapper


@pytest.mark.parametrize(
    ("target", "call"),
    [
        ("append", 1),  # before the first batch touches the store
        ("setitem", 5),  # batch 2: codes written, writing paths fails
        ("setitem", 9),  # batch 3: codes and paths written, writing labels fails
        ("sync", 3),  # batch 3's data on disk, commit marker not bumped
        ("sync", 5),  # the final batch, uncommitted
    ],
)
def test_resume_after_interruption(workspace, tmp_path, monkeypatch, target, call):
    ws, run, model, files = workspace
    if target == "append":
        patched = (StoreWriter, "append", StoreWriter.append)
    elif target == "sync":
        patched = (StoreWriter, "_sync", StoreWriter._sync)
    else:
        patched = (zarr.Array, "__setitem__", zarr.Array.__setitem__)
    cls, name, original = patched
    monkeypatch.setattr(cls, name, _fail_on_call(call, original))
    with pytest.raises(Killed):
        _index(ws, model, tmp_path / "s.zarr")
    monkeypatch.setattr(cls, name, original)
    committed = len(open_store(tmp_path / "s.zarr"))
    assert committed < 24 and committed % 5 == 0  # whole batches only
    report = _index(ws, model, tmp_path / "s.zarr")
    assert report.added == 24 - committed
    _check_complete(tmp_path / "s.zarr", ws, run, files)


@pytest.mark.parametrize("kill_in", ["_sync", "append"])
def test_resume_after_sigkill(workspace, tmp_path, kill_in):
    """A real SIGKILL of the indexing process (with decoding workers) mid-run."""
    ws, run, model, files = workspace
    script = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from tbhcli.indexing.index import index
        from tbhcli.storage.writer import StoreWriter

        original, calls = StoreWriter.{kill_in}, []

        def dying(self, *args):
            calls.append(1)
            if len(calls) == 3:
                os.kill(os.getpid(), signal.SIGKILL)
            return original(self, *args)

        StoreWriter.{kill_in} = dying
        index(Path({str(ws / "images")!r}), store=Path({str(tmp_path / "s.zarr")!r}),
              model=Path({str(model)!r}), batch_size=5, workers=2, device="cpu")
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert len(open_store(tmp_path / "s.zarr")) == 10  # batches 1 and 2 committed
    _index(ws, model, tmp_path / "s.zarr", workers=2)
    _check_complete(tmp_path / "s.zarr", ws, run, files)


def test_queries_folder_is_recorded(workspace, tmp_path):
    ws, run, model, _ = workspace
    queries = make_images(tmp_path / "queries", {"dog": 2, "fox": 1}, seed=5)
    report = _index(ws, model, tmp_path / "s.zarr", query_images=tmp_path / "queries")
    assert [t.added for t in report.tables] == [24, 3] and report.rows == 24
    s = open_store(tmp_path / "s.zarr")
    assert s.classes == ["cat", "dog", "emu", "fox"]
    np.testing.assert_array_equal(s.queries.labels, [1, 1, 3])
    np.testing.assert_array_equal(s.queries.read_codes(), reference_codes(run, queries))
    again = _index(ws, model, tmp_path / "s.zarr", query_images=tmp_path / "queries")
    assert again.added == 0


def test_no_leftover_processes(workspace, tmp_path):
    ws, _, model, _ = workspace
    # Helpers other tests started (e.g. multiprocessing's resource tracker) are not ours.
    before = set(psutil.Process().children())
    _index(ws, model, tmp_path / "s.zarr", workers=2)
    assert set(psutil.Process().children()) - before == set()


def test_parallel_decoding_equals_inline(tmp_path):
    files = make_images(tmp_path, {"a": 11})
    files[3].write_bytes(b"")
    files[8].write_text("no image")
    inline = list(decode_batches(files, 32, 4, workers=0))
    parallel = list(decode_batches(files, 32, 4, workers=2))  # tasks of 2 images, merged
    assert len(parallel) == len(inline) == 3
    for a, b in zip(inline, parallel, strict=True):
        assert a.ok == b.ok and [i for i, _ in a.errors] == [i for i, _ in b.errors]
        np.testing.assert_array_equal(a.pixels, b.pixels)
    assert [i for i, _ in inline[0].errors] == [3] and [i for i, _ in inline[2].errors] == [0]


def test_cli_index_reports_and_refuses_with_one_line(workspace, tmp_path):
    ws, _, model, _ = workspace
    (ws / "images" / "broken.jpg").write_bytes(b"\xff\xd8\xff")  # a JPEG header, nothing else
    try:
        args = ["index", str(ws / "images"), "--store", str(tmp_path / "s.zarr"), "--device", "cpu"]
        args += ["--model", str(model), "--errors", str(tmp_path / "e.txt"), "--workers", "0"]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        assert "24 added, 0 already indexed, 1 skipped" in result.output
        assert "on CPU" in result.output
        assert (tmp_path / "e.txt").read_text().startswith(str(ws / "images" / "broken.jpg"))
        other = export(make_lsh_run(tmp_path / "o", seed=4), out=tmp_path / "o.onnx")
        args[args.index("--model") + 1] = str(other)
        refused = CliRunner().invoke(app, args)
        assert refused.exit_code == 1 and "another model" in refused.output
        assert "Traceback" not in refused.output
    finally:
        (ws / "images" / "broken.jpg").unlink()


def test_multi_index_tables_are_built_and_kept(workspace, tmp_path):
    """`--multi-index` builds the tables; a later run extends them; searches stay exact."""
    from tbhcli.search import topk, topk_reference
    from tbhcli.storage.mih_tables import open_tables

    ws, run, model, files = workspace
    store = tmp_path / "s.zarr"
    first = make_images(tmp_path / "images", {"a": 10})
    assert _index(tmp_path, model, store).multi_index is None  # not asked for
    result = CliRunner().invoke(
        app,
        ["index", str(tmp_path / "images"), "--store", str(store), "--model", str(model),
         "--workers", "0", "--device", "cpu", "--multi-index"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "multi-index tables: 10 rows" in result.output
    more = make_images(tmp_path / "images", {"b": 6}, seed=3, start=20)
    assert _index(tmp_path, model, store).multi_index == (16, 2)  # extended without asking
    assert open_tables(open_store(store)).rows_indexed == 16
    codes = reference_codes(run, first + more)
    for k in (1, 5, 16):
        expected = topk_reference(codes, codes, k)
        found = topk(store, codes, k, method="mih")
        np.testing.assert_array_equal(found[1], expected[1])
        np.testing.assert_array_equal(found[0], expected[0])


def test_index_report_prints_itself_and_names_the_option_as_the_user_would():
    from pathlib import Path

    from rich.console import Console

    from tbhcli.errors import on_command_line
    from tbhcli.indexing.index import IndexReport
    from tbhcli.indexing.tables import TableReport

    skipped = [(f"bad{i}.jpg", "truncated") for i in range(6)]
    table = TableReport(Path("imgs"), found=10, already=1, added=3, errors=skipped)
    report = IndexReport(Path("codes.zarr"), Path("m.onnx"), "CPU", 3, 1.5, [table])

    def shown(report) -> str:
        console = Console(record=True, width=200)
        console.print(report)
        return console.export_text()

    text = shown(report)
    assert "imgs: 3 added, 1 already indexed, 6 skipped (unreadable)" in text
    assert text.count("skipped bad") == 5 and "pass errors=FILE for the full list" in text
    assert "store codes.zarr: 3 images; 3 added in 1.5 s (2 images/s)" in text
    with on_command_line():
        assert "pass --errors FILE for the full list" in shown(report)
