"""The Python face: the verbs `dir(tbhcli)` lists, paths given one or many, and every docstring
example of the public API run as written (doctest)."""

import doctest
import importlib

import numpy as np
import pytest

import tbhcli
from tbhcli.errors import TbhError
from tbhcli.workspace import as_paths

VERBS = ["check", "duplicates", "encode", "evaluate", "export", "features", "index",
         "open_store", "query", "remove", "serve", "train"]  # fmt: skip
# modules whose docstrings carry examples a user can paste
EXAMPLES = ["tbhcli.errors", "tbhcli.workspace", "tbhcli.training.options", "tbhcli.search.api",
            "tbhcli.imaging.encode", "tbhcli.training.fit", "tbhcli.apps.encode",
            "tbhcli.apps.store_object", "tbhcli.imaging.recipe"]  # fmt: skip


def test_dir_lists_the_verbs_and_each_resolves():
    names = dir(tbhcli)
    assert set(VERBS) <= set(names) and "import_module" not in names and "Any" not in names
    for verb in VERBS:
        assert callable(getattr(tbhcli, verb)), verb


@pytest.mark.parametrize("module", EXAMPLES)
def test_docstring_examples_run(module, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that default to ./runs or ./onnx write here
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    result = doctest.testmod(importlib.import_module(module), optionflags=flags)
    assert result.attempted > 0, f"{module} has no example"
    assert result.failed == 0


def test_one_path_is_one_path_not_its_letters():
    assert as_paths("img.png") == [as_paths(["img.png"])[0]]
    with pytest.raises(TbhError, match="query image not found: nowhere.png$"):
        tbhcli.query("nowhere.png")  # was "query image not found: n"


def test_encode_refuses_arrays_the_model_cannot_take(tmp_path):
    np.save(tmp_path / "db.npy", np.random.default_rng(0).random((100, 16), dtype=np.float32))
    run = tbhcli.train(tmp_path / "db.npy", bits=16, method="lsh", out=tmp_path / "run")
    model = tbhcli.export(run, tmp_path / "m.features.onnx", input="features")
    features = np.random.default_rng(1).random((5, 16), dtype=np.float32)
    codes = tbhcli.encode(features, model, device="cpu")
    assert codes.shape == (5, 2) and np.array_equal(codes, run_codes_reference(run, features))
    with pytest.raises(TbhError, match="takes 16-d features"):
        tbhcli.encode(features[:, :8], model, device="cpu")
    with pytest.raises(TbhError, match="pixels must be uint8|takes features"):
        tbhcli.encode(np.zeros((1, 3, 8, 8), np.uint8), model, device="cpu")


def run_codes_reference(run, features):
    """The run's own encoder in torch: what the exported model must reproduce bit for bit."""
    from tbhcli.hashing import runs

    return runs.load_run(run).encode(features)


def test_one_metric_is_one_metric_not_its_letters(tmp_path):
    from tbhcli.imaging.featureset import save_features

    rng = np.random.default_rng(0)
    x, labels = rng.random((120, 16), dtype=np.float32), rng.integers(0, 3, 120)
    save_features(tmp_path / "db.npy", x, labels)
    save_features(tmp_path / "q.npy", x[:10], labels[:10])
    run = tbhcli.train(tmp_path / "db.npy", bits=8, method="lsh", out=tmp_path / "run")
    kwargs = dict(run=run, database=tmp_path / "db.npy", query_features=tmp_path / "q.npy")
    one = tbhcli.evaluate(metric="p@5", **kwargs)  # was "unknown metric 'p'"
    assert one.scores == tbhcli.evaluate(metric=["p@5"], **kwargs).scores
    assert list(one.scores) == ["p@5"]
