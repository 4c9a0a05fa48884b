"""`tbh evaluate` on feature sets: the CLI, its JSON and plot outputs, and its user errors."""

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tbhcli.cli import app
from tbhcli.errors import TbhError
from tbhcli.evaluation.evaluate import evaluate, evaluate_runs, pr_figure
from tbhcli.evaluation.metrics import evaluate_codes
from tbhcli.hashing.baselines import fit_baseline
from tbhcli.hashing.runs import load_run, save_run
from tbhcli.imaging.featureset import save_features
from tests.tiny_workspace import build_image_workspace

runner = CliRunner()


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """Clustered 16-d features (database 200, queries 40, 4 classes) and an ITQ run on them."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((4, 16)) * 3

    def sample(n):
        labels = rng.integers(0, 4, n)
        return (centres[labels] + rng.standard_normal((n, 16))).astype(np.float32), labels

    save_features(tmp_path / "db.npy", *sample(200))
    save_features(tmp_path / "q.npy", *sample(40))
    db, _ = np.load(tmp_path / "db.npy"), None
    config = {"method": "itq", "bits": 16, "feature_dim": 16, "backbone": None, "seed": 0}
    save_run(tmp_path / "runs" / "itq-16", config, fit_baseline("itq", db, 16))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_feature_level_equals_direct_metric(workspace):
    run = load_run(workspace / "runs" / "itq-16")
    db, q = np.load(workspace / "db.npy"), np.load(workspace / "q.npy")
    expected = evaluate_codes(
        run.encode(db),
        np.load(workspace / "db.labels.npy"),
        run.encode(q),
        np.load(workspace / "q.labels.npy"),
        ["map@100", "p@r2"],
    )
    # --run defaults to the newest run in ./runs
    got = evaluate(
        ["map@100", "p@r2"], database=workspace / "db.npy", query_features=workspace / "q.npy"
    )
    assert got.scores == pytest.approx(expected)
    assert got.scores["map@100"] > 0.6  # well-separated clusters are easy


def test_cli_json_and_plot(workspace):
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--metric",
            "map@50",
            "--metric",
            "p@10",
            "--database",
            "db.npy",
            "--query-features",
            "q.npy",
            "--json",
            "--plot",
            "pr.png",
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert "using run runs/itq-16 (newest)" in result.stderr
    (scored,) = payload["results"]
    assert payload["schema"] == "tbh.evaluate/1" and scored["store"] is None
    assert scored["run"] == "runs/itq-16"  # the default run, named
    scores = scored["scores"]
    assert list(scores) == ["map@50", "p@10"]
    assert all(0 <= v <= 1 for v in scores.values())
    assert (workspace / "pr.png").read_bytes()[:4] == b"\x89PNG"


@pytest.fixture
def two_runs(workspace):
    """The ITQ run plus a PCAH run on the same features (a second curve to overlay)."""
    db = np.load(workspace / "db.npy")
    config = {"method": "pcah", "bits": 8, "feature_dim": 16, "backbone": None, "seed": 0}
    save_run(workspace / "runs" / "pcah-8", config, fit_baseline("pcah", db, 8))
    return [workspace / "runs" / "itq-16", workspace / "runs" / "pcah-8"]


def test_pr_plot_is_titled_with_model_bits_and_map(workspace):
    features = {"database": Path("db.npy"), "query_features": Path("q.npy")}
    got = evaluate(["p@10", "map@50"], plot=Path("pr.png"), **features)
    assert Path("pr.png").read_bytes()[:4] == b"\x89PNG"
    figure = pr_figure([got])
    title = figure.axes[0].get_title()
    assert title == f"itq-16 (itq, 16 bits)\nmAP@50 {got.scores['map@50']:.4f}"
    (line,) = figure.axes[0].get_lines()
    np.testing.assert_array_equal(line.get_xdata(), got.recall)


def test_several_runs_are_scored_alone_and_overlaid(workspace, two_runs):
    features = {"database": Path("db.npy"), "query_features": Path("q.npy")}
    both = evaluate_runs(two_runs, metric=["map@50", "p@r1"], plot=Path("pr.svg"), **features)
    for run, got in zip(two_runs, both, strict=True):  # each equals its own evaluation
        alone = evaluate(["map@50", "p@r1"], run=run, plot=Path("one.png"), **features)
        assert got.scores == pytest.approx(alone.scores)
        np.testing.assert_allclose(got.precision, alone.precision)
    axes = pr_figure(both).axes[0]
    assert len(axes.get_lines()) == 2
    legend = [t.get_text() for t in axes.get_legend().get_texts()]
    assert legend == [f"{r.model}: mAP@50 {r.scores['map@50']:.4f}" for r in both]
    assert legend[1].startswith("pcah-8 (pcah, 8 bits)")
    assert "<svg" in Path("pr.svg").read_text()


def test_cli_repeated_run_compares_runs(workspace, two_runs):
    args = ["evaluate", "--database", "db.npy", "--query-features", "q.npy", "--plot", "pr.png"]
    runs = [a for r in two_runs for a in ("--run", str(r))]
    result = runner.invoke(app, [*args, *runs, "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    results = payload["results"]
    assert [r["model"] for r in results] == ["itq-16 (itq, 16 bits)", "pcah-8 (pcah, 8 bits)"]
    assert [r["run"] for r in results] == runs[1::2] and list(results[0]["scores"]) == ["map@1000"]
    table = runner.invoke(app, [*args, *runs], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert "itq-16 (itq, 16 bits)" in table.output and "pcah-8 (pcah, 8 bits)" in table.output
    assert "precision-recall curves written to pr.png" in table.output
    no_db = runner.invoke(app, ["evaluate", *runs])
    assert no_db.exit_code == 1 and "--database" in no_db.output
    Path("pr.png").unlink()
    missing = runner.invoke(app, [*args, *runs, "--run", "runs/nope"])  # refused before work
    assert missing.exit_code == 1 and not Path("pr.png").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--metric", "recall@5", "--database", "db.npy", "--query-features", "q.npy"], "metric"),
        (["--database", "db.npy"], "--query-features"),
        (["--database", "missing.npy", "--query-features", "q.npy"], "not found"),
        (["--store", "nothing.zarr"], "no code store"),
        (["--database", "db.npy", "--query-features", "q.npy", "--plot", "pr.xyz"], "image type"),
    ],
)
def test_cli_user_errors_are_one_line(workspace, args, message):
    result = runner.invoke(app, ["evaluate", *args])
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()  # "using run ... (newest)", then the error
    assert len([line for line in lines if not line.startswith("using ")]) == 1


def test_missing_labels_is_a_user_error(workspace):
    (workspace / "q.labels.npy").unlink()
    result = runner.invoke(app, ["evaluate", "--database", "db.npy", "--query-features", "q.npy"])
    assert result.exit_code == 1 and "no labels" in result.output


def test_store_without_labels_is_a_user_error(tmp_path):
    from tests.code_stores import random_codes, write_store

    codes = random_codes(np.random.default_rng(0), 40, 16)
    write_store(tmp_path / "db.zarr", codes, chunk_rows=16)
    write_store(tmp_path / "q.zarr", codes[:5], chunk_rows=16)
    with pytest.raises(TbhError, match="needs labels"):
        evaluate(store=tmp_path / "db.zarr", query_store=tmp_path / "q.zarr")


def test_query_store_of_another_model_is_a_user_error(tmp_path):
    import zarr

    from tests.code_stores import random_codes, write_store

    codes = random_codes(np.random.default_rng(0), 40, 16)
    for name, sha in (("db", "a" * 64), ("q", "b" * 64)):
        write_store(tmp_path / f"{name}.zarr", codes, chunk_rows=16)
        zarr.open_group(tmp_path / f"{name}.zarr", mode="r+").attrs["model_sha256"] = sha
    with pytest.raises(TbhError, match="another model"):
        evaluate(store=tmp_path / "db.zarr", query_store=tmp_path / "q.zarr")


def test_multi_labels_with_other_classes_are_a_user_error(workspace):
    for name, classes in (("db", 3), ("q", 4)):
        n = len(np.load(workspace / f"{name}.npy"))
        np.save(workspace / f"{name}.labels.npy", np.eye(classes, dtype=np.int64)[np.arange(n) % 3])
    with pytest.raises(TbhError, match="3 classes but query labels have 4"):
        evaluate(database=workspace / "db.npy", query_features=workspace / "q.npy")
    np.save(workspace / "q.labels.npy", np.zeros(40, np.int64))
    with pytest.raises(TbhError, match="differ in kind"):
        evaluate(database=workspace / "db.npy", query_features=workspace / "q.npy")


@pytest.fixture
def image_workspace(tmp_path, monkeypatch):
    """Tiny PNG classes, their features, an LSH run on the tiny backbone, its ONNX, a store
    with the queries recorded as its query set."""
    classes, query_classes = {"a": 12, "b": 12, "c": 12}, {"a": 3, "b": 3, "c": 3}
    build_image_workspace(tmp_path, 32, classes, query_classes, record_queries=True, features=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_store_level_equals_feature_level(image_workspace):
    names = ["map@20", "p@5", "p@r2"]
    on_store = evaluate(names)  # ./codes.zarr and its recorded query set
    on_features = evaluate(names, database=Path("images.npy"), query_features=Path("queries.npy"))
    assert on_store.scores == pytest.approx(on_features.scores)


@pytest.mark.slow
def test_dask_evaluation_equals_local(image_workspace):
    local = evaluate(["map@20", "p@r2"])
    on_cluster = evaluate(["map@20", "p@r2"], dask="local")
    assert on_cluster.scores == pytest.approx(local.scores)


def test_a_run_is_scored_on_its_feature_sets_never_the_store(image_workspace):
    """`--run` beside a store scored the store (another number) without a word; now it ranks
    the run's training features (config.json) with the queries given, or says what is missing."""
    run = Path("runs/lsh32")
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "features": "images.npy"}))
    names = ["map@20", "p@r2"]
    by_run = evaluate(names, run=run, query_features=Path("queries.npy"))
    explicit = evaluate(
        names, run=run, database=Path("images.npy"), query_features=Path("queries.npy")
    )
    assert by_run.store is None and by_run.run.resolve() == run.resolve()
    assert by_run.scores == pytest.approx(explicit.scores)

    result = runner.invoke(app, ["evaluate", "--run", "runs/lsh32"])  # no queries: one line
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "pass --query-features Q.npy" in result.output and "images.npy" in result.output
    Path("images.npy").unlink()
    result = runner.invoke(app, ["evaluate", "--run", "runs/lsh32"])
    assert result.exit_code == 1 and "training features images.npy are not here" in result.output
