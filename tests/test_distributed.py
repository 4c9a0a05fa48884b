"""`tbh index --dask`: equal to plain `tbh index` row for row, exactly once when workers or the
client die, the model checked by sha256, the store readable while it runs."""

import os
import signal
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import cloudpickle
import numpy as np
import pytest
from distributed import Client, LocalCluster
from typer.testing import CliRunner

from tbhcli.cli import app
from tbhcli.cli_options import JpegDecoder
from tbhcli.deploy.export import export
from tbhcli.deploy.runtime import model_info
from tbhcli.errors import TbhError
from tbhcli.imaging.images import read_file_list
from tbhcli.indexing.cluster import DECODERS, ModelPlugin
from tbhcli.indexing.index import index
from tbhcli.search import topk
from tbhcli.storage.store import open_store
from tbhcli.storage.writer import StoreWriter
from tests.tiny_workspace import make_images, make_lsh_run, reference_codes

pytestmark = [pytest.mark.dask, pytest.mark.slow]
# The worker-killing helper below is defined here; ship it by value, workers cannot import tests.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A model, 23 images in class folders plus an unreadable one, and a plain `tbh index` store."""
    ws = tmp_path_factory.mktemp("ws")
    model = export(make_lsh_run(ws / "run"), out=ws / "m.onnx")
    files = make_images(ws / "images", {"cat": 9, "dog": 8, "": 6})
    (ws / "images" / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff")
    index(ws / "images", store=ws / "plain.zarr", model=model, batch_size=4, workers=0)
    return ws, model, files


@pytest.fixture(scope="module")
def cluster():
    """Two single-threaded worker processes (a killed one is restarted by its nanny)."""
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as local:
        yield local.scheduler_address


def _on_cluster(ws, model, store, address, **kw):
    kw = {"batch_size": 3, "task_size": 5, "device": "cpu"} | kw
    return index(ws / "images", store=store, model=model, dask=address, **kw)


def assert_same_store(path, reference):
    got, want = open_store(path), open_store(reference)
    assert got.paths.tolist() == want.paths.tolist()
    np.testing.assert_array_equal(got.read_codes(), want.read_codes())
    np.testing.assert_array_equal(got.labels, want.labels)
    assert got.classes == want.classes and got.root == want.root
    assert got.group["codes"].shape[0] == len(got)  # nothing beyond the committed rows


def test_cluster_equals_plain_index_and_store_stays_readable(workspace, cluster, tmp_path):
    ws, model, files = workspace
    store = tmp_path / "s.zarr"
    seen = []
    original = StoreWriter.append

    def append_then_read(self, codes, paths, labels):
        original(self, codes, paths, labels)
        reader = open_store(store)  # what search sees mid-run: committed rows, consistent
        assert len(reader) == len(reader.paths) == len(reader.read_codes())
        dists, ids = topk(store, reader.read_codes()[:2], 1)
        assert (dists[:, 0] == 0).all() and ids.max() < len(reader)
        seen.append(len(reader))

    StoreWriter.append = append_then_read
    try:
        report = _on_cluster(ws, model, store, cluster)
    finally:
        StoreWriter.append = original
    assert seen == [5, 9, 14, 19, 23]  # one commit per task of 5 files; task 2 has broken.jpg
    assert report.added == report.rows == 23 and report.provider == "CPUExecutionProvider"
    assert [p for p, _ in report.tables[0].errors] == ["dog/broken.jpg"]
    assert_same_store(store, ws / "plain.zarr")
    order = sorted(f.relative_to(ws / "images").as_posix() for f in files)
    assert open_store(store).paths.tolist() == order  # the documented order: the folder listing
    again = _on_cluster(ws, model, store, cluster)
    assert (again.added, again.tables[0].already) == (0, 23)


def _install_killer(marker: str) -> None:
    """On a worker: the second inference call of this process SIGKILLs it, once per marker."""
    import tbhcli.indexing.cluster as d

    original, calls = d.run_codes, []

    def dying(session, batch):
        calls.append(1)
        if len(calls) == 2:
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                pass
            else:
                os.kill(os.getpid(), signal.SIGKILL)
        return original(session, batch)

    d.run_codes = dying
    d._original_run_codes = original


def _remove_killer() -> None:
    import tbhcli.indexing.cluster as d

    d.run_codes = getattr(d, "_original_run_codes", d.run_codes)


def test_worker_killed_mid_task_every_image_once(workspace, cluster, tmp_path):
    ws, model, _ = workspace
    marker = tmp_path / "killed"
    with Client(cluster) as client:
        client.run(_install_killer, str(marker))
        try:
            report = _on_cluster(ws, model, tmp_path / "s.zarr", cluster)
        finally:
            client.run(_remove_killer)
        models = client.run(lambda dask_worker: sorted(dask_worker.plugins))
    assert marker.exists()  # a worker really died mid-task, and Dask ran its task again
    assert report.added == 23
    assert_same_store(tmp_path / "s.zarr", ws / "plain.zarr")
    # the restarted worker got the model too, through the plugin: one copy per worker
    assert all(sum(n.startswith("tbh-model") for n in names) == 1 for names in models.values())


def test_client_killed_then_restarted_resumes(workspace, cluster, tmp_path):
    ws, model, _ = workspace
    store = tmp_path / "s.zarr"
    script = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from tbhcli.indexing.index import index
        from tbhcli.storage.writer import StoreWriter

        original, calls = StoreWriter.append, []

        def dying(self, *args):
            calls.append(1)
            if len(calls) == 3:
                os.kill(os.getpid(), signal.SIGKILL)
            return original(self, *args)

        StoreWriter.append = dying
        index(Path({str(ws / "images")!r}), store=Path({str(store)!r}), model=Path({str(model)!r}),
              batch_size=3, task_size=5, device="cpu", dask={cluster!r})
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert len(open_store(store)) == 9  # tasks 1 and 2 (one unreadable file), not task 3
    report = _on_cluster(ws, model, store, cluster)
    assert (report.added, report.tables[0].already) == (14, 9)
    assert_same_store(store, ws / "plain.zarr")


def test_file_list_order_duplicates_and_missing_files(workspace, cluster, tmp_path):
    ws, model, files = workspace
    root = ws / "images"
    listed = [files[5], files[0], files[12]]
    lines = [str(listed[0]), listed[1].relative_to(root).as_posix(), "", str(listed[2])]
    lines += [str(listed[0]), "cat/missing.jpg"]  # listed twice; not on disk
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    want = [f.relative_to(root).as_posix() for f in listed]
    for dask in (None, cluster):
        store = tmp_path / f"{dask is None}.zarr"
        kw = {"workers": 0} if dask is None else {}
        report = _on_cluster(ws, model, store, dask, files=tmp_path / "list.txt", **kw)
        assert [p for p, _ in report.tables[0].errors] == ["cat/missing.jpg"]
        stored = open_store(store)
        assert stored.paths.tolist() == want  # the list's order, each file once
        np.testing.assert_array_equal(stored.read_codes(), reference_codes(ws / "run", listed))
    (tmp_path / "bad.txt").write_text("../elsewhere.jpg\n")
    with pytest.raises(TbhError, match="bad.txt:1"):
        read_file_list(tmp_path / "bad.txt", root)
    (tmp_path / "bad.txt").write_text(f"{tmp_path}/x.jpg\n")
    with pytest.raises(TbhError, match="not under"):
        read_file_list(tmp_path / "bad.txt", root)


def test_model_bytes_are_checked_on_the_worker(workspace, cluster):
    _, model, _ = workspace
    info = model_info(model)
    damaged = bytearray(model.read_bytes())
    damaged[-1] ^= 1
    plugin = ModelPlugin(bytes(damaged), info, "cpu", decoder="pillow")  # a name not yet used
    with pytest.raises(TbhError, match="sha256"):
        plugin.setup(SimpleNamespace(address="tcp://w"))
    with Client(cluster) as client, pytest.raises(TbhError, match="damaged in transit"):
        client.register_plugin(plugin)
    ModelPlugin(model.read_bytes(), info, "cpu").setup(SimpleNamespace(address="tcp://w"))


def test_cli_dask_reports_and_refuses_with_one_line(workspace, cluster, tmp_path, monkeypatch):
    import tbhcli.cluster

    monkeypatch.setattr(tbhcli.cluster, "CONNECT_TIMEOUT_S", 1)
    assert [d.value for d in JpegDecoder] == list(DECODERS)
    ws, model, _ = workspace
    args = ["index", str(ws / "images"), "--store", str(tmp_path / "s.zarr"), "--device", "cpu"]
    args += ["--model", str(model), "--task-size", "8"]
    done = CliRunner().invoke(app, [*args, "--dask", cluster])
    assert done.exit_code == 0, done.output
    output = " ".join(done.output.split())  # rich wraps lines at the terminal width
    assert "2 Dask workers (2 x CPU, pillow decoding)" in output
    assert "23 added, 0 already indexed, 1 skipped" in output
    for extra, message in [
        (["--dask", cluster, "--workers", "2"], "--workers sizes a local cluster"),
        (["--dask", "tcp://127.0.0.1:9"], "cannot reach"),
        (["--dask", "local", "--task-size", "0"], "--task-size"),
        (["--jpeg-decoder", "nvjpeg"], "add --dask"),
        (["--dask", cluster, "--jpeg-decoder", "nvjpeg"], "needs a CUDA GPU"),
    ]:
        refused = CliRunner().invoke(app, [*args, *extra])
        output = " ".join(refused.output.split())
        assert refused.exit_code == 1 and message in output, refused.output
        assert "Traceback" not in refused.output
