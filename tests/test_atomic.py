"""Every file tbh writes appears whole or not at all (tbhcli/atomic.py), and bad weights or
features are refused where they enter (issue 21, items 10 and 11)."""

import errno
import os

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tbhcli.atomic import atomic_output, write_text_atomic
from tbhcli.cli import app
from tbhcli.errors import TbhError
from tbhcli.hashing.runs import load_run, save_run
from tbhcli.imaging.featureset import load_features, save_features
from tests.disks import fill


def tbh(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    out = tmp_path / "out.txt"
    out.write_text("old")
    with pytest.raises(RuntimeError), atomic_output(out) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert out.read_text() == "old" and os.listdir(tmp_path) == ["out.txt"]
    full = pytest.raises(TbhError, match="No space left on device; free some space")
    with full, atomic_output(out):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert out.read_text() == "old" and os.listdir(tmp_path) == ["out.txt"]
    write_text_atomic(out, "new")
    assert out.read_text() == "new" and os.listdir(tmp_path) == ["out.txt"]


def test_read_only_folder_is_one_line(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("root writes anywhere: a read-only folder cannot be made here")
        with pytest.raises(TbhError, match="Permission denied; pass a writable location"):
            write_text_atomic(folder / "x.txt", "x")
    finally:
        folder.chmod(0o700)


@pytest.fixture
def full_disk(mount_tmpfs):
    """A 256 KiB tmpfs filled to the last byte (needs root)."""
    mount = mount_tmpfs("256k")
    fill(mount)
    return mount


def test_outputs_on_a_full_disk_are_one_line_and_leave_nothing(indexed_workspace, full_disk):
    """Issue 21.10: features -o, export -o, query --html and evaluate --plot ended in
    tracebacks and left 0-byte files or `m.onnx.tmp`."""
    ws = indexed_workspace
    query = ["query", ws.queries[0], "--store", ws.store, "--model", ws.model]
    commands = [
        ["features", ws.root / "images", "-o", full_disk / "f.npy", "--backbone", "tiny"],
        ["export", ws.run, "-o", full_disk / "m.onnx"],
        [*query, "--html", full_disk / "g.html"],
    ]
    for command in commands:
        result = tbh(*command, "--workers", 0) if command[0] == "features" else tbh(*command)
        assert result.exit_code == 1, result.output
        assert "No space left on device" in result.output, result.output
        assert sorted(os.listdir(full_disk)) == ["filler"], command


def test_a_run_with_nan_weights_is_refused(indexed_workspace, tmp_path):
    """Issue 21.11: `tbh export` accepted a run whose weights are NaN."""
    run = load_run(indexed_workspace.run)
    with torch.no_grad():
        next(iter(run.encoder.state_dict().values())).fill_(float("nan"))
    save_run(tmp_path / "nan_run", run.config, run.encoder)
    result = tbh("export", tmp_path / "nan_run", "-o", tmp_path / "m.onnx")
    assert result.exit_code == 1 and "NaN or inf weights" in result.output
    assert not (tmp_path / "m.onnx").exists()


def test_npz_named_npy_and_nan_features_are_refused(tmp_path):
    """Issue 21.11: an .npz named .npy was an AttributeError in `tbh train`; NaN features
    were written with exit 0."""
    with open(tmp_path / "f.npy", "wb") as fh:
        np.savez(fh, a=np.zeros((4, 3), np.float32))
    with pytest.raises(TbhError, match="is an .npz archive"):
        load_features(tmp_path / "f.npy")
    result = tbh("train", tmp_path / "f.npy", "--bits", 8)
    assert result.exit_code == 1 and ".npz archive" in result.output
    features = np.ones((4, 3), np.float32)
    features[2, 1] = np.nan
    with pytest.raises(TbhError, match="NaN or inf in 1 rows"):
        save_features(tmp_path / "g.npy", features)
    assert not (tmp_path / "g.npy").exists()
