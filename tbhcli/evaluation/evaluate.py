"""`tbh evaluate`: retrieval quality of a trained hasher, on feature sets or on a code store.

Two sources of codes, one set of metrics (tbhcli.evaluation.metrics):
- feature level: `--run runs/NAME --database db.npy --query-features q.npy` encodes both with
  the run;
- store level (the default): the store's codes against its recorded query set (or
  `--query-store`).
Both give the same number for the same model and images, since the store holds the same codes.
`evaluate_runs` scores several runs on the same feature sets and overlays their PR curves.
"""

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tbhcli.errors import TbhError
from tbhcli.evaluation.metrics import evaluate_codes, label_histograms, parse_metric, pr_curve
from tbhcli.hashing.runs import load_config, load_run
from tbhcli.imaging.featureset import check_label_kinds, load_features
from tbhcli.storage.store import CodeStore, open_store
from tbhcli.terminal import shown
from tbhcli.workspace import resolve_run, resolve_store

log = logging.getLogger(__name__)


@dataclass
class LabelledCodes:
    """Packed codes [N, bits / 8] (an array or an open CodeStore) with labels, and their source."""

    codes: np.ndarray | CodeStore
    labels: np.ndarray
    source: str
    model: str = ""  # what made the codes, for plot titles: "itq-16 (itq, 16 bits)"


@dataclass
class Evaluation:
    """Metric values by name, plus the PR curve when asked for."""

    scores: dict[str, float]
    database: str
    queries: str
    precision: np.ndarray | None = field(default=None, repr=False)
    recall: np.ndarray | None = field(default=None, repr=False)
    model: str = ""  # the run or the store's model: "itq-16 (itq, 16 bits)"
    run: Path | None = None  # feature level: the run that encoded both sets
    store: Path | None = None  # store level: the database store

    @property
    def headline(self) -> str:
        """The score a plot shows: the first mAP asked for, else the first metric."""
        name = next((m for m in self.scores if m.startswith("map@")), next(iter(self.scores)))
        return f"{'mAP' + name[3:] if name.startswith('map@') else name} {self.scores[name]:.4f}"

    def to_json(self) -> str:
        """This evaluation as a `tbh.evaluate/1` document."""
        return evaluations_json([self])


class Evaluations(list[Evaluation]):
    """Evaluations of the same queries against the same database (one per run compared): they
    print as one table (a row per metric, a column per model) and are one `tbh.evaluate/1`."""

    def __rich_console__(self, console, options) -> Iterator:
        yield scores_table(self)

    def to_json(self) -> str:
        return evaluations_json(self)


def encode_feature_set(run_path: Path, features_path: Path) -> LabelledCodes:
    """Encode a labelled feature set with a run's sign encoder."""
    feature_set = load_features(features_path, require_labels=True)
    run = load_run(run_path)
    codes = run.encode(feature_set.features)
    model = f"{run.name} ({run.config['method']}, {run.bits} bits)"
    return LabelledCodes(codes, feature_set.labels, str(features_path), model)


def store_codes(store_path: Path, queries: Path | None) -> tuple[LabelledCodes, LabelledCodes]:
    """Database and query codes from a store; queries from the store `queries` or its query set."""
    database = open_store(store_path)
    query_store = open_store(queries) if queries is not None else database.queries
    if query_store is None:
        raise TbhError(
            f"store {store_path} has no query set; index one with "
            "`tbh index IMAGES --query-images DIR` or pass --query-store STORE."
        )
    if query_store.bits != database.bits:
        raise TbhError(
            f"query codes have {query_store.bits} bits but the store has {database.bits}."
        )
    # A recorded query set has no model of its own (it is the store's); a separate store does.
    q_model = query_store.attrs.get("model_sha256")
    if q_model is not None and q_model != database.attrs.get("model_sha256"):
        raise TbhError(
            f"query store {queries} was built with another model ({query_store.attrs.get('model')})"
            f" than {store_path} ({database.attrs.get('model')}); index both with the same model."
        )
    db_labels, q_labels = _shared_label_ids(database, query_store)
    model = f"{database.attrs.get('model', '?')} ({database.bits} bits)"
    return (
        LabelledCodes(database, db_labels, str(store_path), model),
        LabelledCodes(query_store.read_codes(), q_labels, f"{queries or store_path} (queries)"),
    )


def _shared_label_ids(database, queries) -> tuple[np.ndarray, np.ndarray]:
    """Labels of both stores as ids in one class list (each store numbers its own classes)."""
    db_labels, q_labels = database.labels, queries.labels  # (N,), (Q,) int32; -1: no class
    if not (db_labels >= 0).any() or not (q_labels >= 0).any():
        raise TbhError("evaluation needs labels: index images in class subfolders (DIR/CLASS/img).")
    names = sorted(set(database.classes) | set(queries.classes))
    ids = {name: i for i, name in enumerate(names)}

    def remap(labels: np.ndarray, classes: list[str]) -> np.ndarray:
        table = np.array([ids[c] for c in classes] + [-1], dtype=np.int64)
        return table[np.where(labels < 0, len(classes), labels)]

    # Unlabelled items are -1 in the database and -2 among queries: relevant to nothing.
    q = remap(q_labels, queries.classes)
    return remap(db_labels, database.classes), np.where(q < 0, -2, q)


def evaluate(
    metric: list[str] | None = None,
    run: Path | None = None,
    database: Path | None = None,
    query_features: Path | None = None,
    store: Path | None = None,
    query_store: Path | None = None,
    plot: Path | None = None,
    threads: int | None = None,
    dask: str | None = None,
) -> Evaluation:
    """Evaluate retrieval: feature sets when `database` is given, else the code store.

    Feature level: `run` (default: the newest) encodes `database` and `query_features` (NAME.npy
    with NAME.labels.npy). Store level: `store` (default: codes.zarr) against `query_store` or the
    store's recorded query set. `plot` receives the precision-recall curve, titled with the
    model, its bits and its mAP.

    `dask` ("local" or a scheduler address) ranks a store's blocks on a Dask cluster.
    """
    metrics = _check_request(metric, plot)
    run_path = store_path = None
    if run is not None and database is None:  # a run is scored on feature sets, never the store
        run_path = resolve_run(run)
        database, query_features = _recorded_features(run_path, query_features)
    if database is not None:
        run_path = resolve_run(run)
        db, q = _feature_codes(run_path, database, query_features)
    else:
        if query_features is not None:
            raise TbhError(
                "--query-features needs --database FEATURES.npy; for a store pass "
                "--query-store STORE."
            )
        store_path = resolve_store(store)
        db, q = store_codes(store_path, query_store)
    result = _score(db, q, metrics, plot is not None, threads, dask)
    result.run, result.store = run_path, store_path
    if plot is not None:
        save_pr_plot(plot, [result])
    return result


def _recorded_features(run: Path, queries: Path | None) -> tuple[Path, Path]:
    """The feature sets `run` records (it was trained on the database; its --eval-queries, if
    any, are queries), `queries` replacing the recorded ones; one line on what is missing."""
    config = load_config(run)
    database = Path(config["features"]) if config.get("features") else None
    queries = queries or (Path(config["eval_queries"]) if config.get("eval_queries") else None)
    if database is None or not database.is_file():
        raise TbhError(
            f"--run {run} is scored on feature sets, and its training features "
            f"{database or '(not recorded)'} are not here: pass --database DB.npy and "
            "--query-features Q.npy (without --run, tbh evaluate scores the store)."
        )
    if queries is None:
        raise TbhError(
            f"--run {run} is scored on feature sets: pass --query-features Q.npy (held-out "
            f"queries with labels) to rank its training features {database}, or --database too "
            "(without --run, tbh evaluate scores the store)."
        )
    return database, queries


def evaluate_runs(
    runs: list[Path],
    database: Path | None,
    query_features: Path | None,
    metric: list[str] | None = None,
    plot: Path | None = None,
    threads: int | None = None,
    dask: str | None = None,
) -> Evaluations:
    """Evaluate several runs on the same feature sets; `plot` overlays their PR curves (TBH
    against ITQ, say), each labelled with its model, bits and mAP."""
    metrics = _check_request(metric, plot)
    if not runs or database is None:
        raise TbhError(
            "runs are compared on feature sets: pass --run (one or more), --database DB.npy "
            "and --query-features Q.npy."
        )
    paths = [resolve_run(r) for r in runs]  # every run exists before the first is scored
    results = Evaluations()
    for path in paths:
        db, q = _feature_codes(path, database, query_features)
        results.append(_score(db, q, metrics, plot is not None, threads, dask))
        results[-1].run = path
    if plot is not None:
        save_pr_plot(plot, results)
    return results


def _check_request(metric: str | list[str] | None, plot: Path | None) -> list[str]:
    """The metrics to compute (default map@1000), refusing typos and plot types up front."""
    metrics = [metric] if isinstance(metric, str) else list(metric or ["map@1000"])
    for name in metrics:
        parse_metric(name)  # fail on a typo before any work
    if plot is not None:
        check_plot_path(plot)
    return metrics


def _feature_codes(
    run: Path, database: Path, query_features: Path | None
) -> tuple[LabelledCodes, LabelledCodes]:
    if query_features is None:
        raise TbhError(
            "--database needs --query-features FEATURES.npy (labelled held-out queries)."
        )
    return encode_feature_set(run, database), encode_feature_set(run, query_features)


def _score(
    db: LabelledCodes,
    q: LabelledCodes,
    metrics: list[str],
    curve: bool,
    threads: int | None,
    dask: str | None,
) -> Evaluation:
    """The metrics of query codes against database codes, and the PR curve if `curve`."""
    check_label_kinds(db.labels, q.labels)
    scores = evaluate_codes(
        db.codes, db.labels, q.codes, q.labels, metrics, threads=threads, dask=dask
    )
    result = Evaluation(scores, db.source, q.source, model=db.model)
    if curve:
        counts = label_histograms(db.codes, db.labels, q.codes, q.labels, threads, dask)
        result.precision, result.recall = pr_curve(*counts)
    return result


def evaluations_json(results: list[Evaluation]) -> str:
    """The `tbh.evaluate/1` document of one evaluation or of runs compared (docs/usage.md):
    what was compared, and per run or store its `scores`."""
    from tbhcli.jsondoc import document

    first = results[0]
    return document(
        "evaluate",
        {
            "database": first.database,
            "queries": first.queries,
            "results": [
                {"run": r.run, "store": r.store, "model": r.model, "scores": r.scores}
                for r in results
            ],
        },
    )


def scores_table(results: list[Evaluation]):
    """One rich table: a row per metric, a value column per evaluated model."""
    from rich.table import Table

    first = results[0]
    table = Table(title=f"{shown(first.queries)} against {shown(first.database)}")
    table.add_column("metric")
    for result in results:
        table.add_column(shown(result.model) if len(results) > 1 else "value", justify="right")
    for name in first.scores:
        table.add_row(name, *(f"{r.scores[name]:.4f}" for r in results))
    return table


def check_plot_path(path: Path) -> None:
    """Refuse an image type matplotlib cannot write before the search runs, not after it."""
    from matplotlib.backend_bases import FigureCanvasBase

    suffix = Path(path).suffix.lstrip(".").lower()
    if suffix and suffix not in FigureCanvasBase.get_supported_filetypes():
        raise TbhError(f"--plot {path}: unknown image type .{suffix}; use .png, .svg or .pdf.")


def pr_figure(results: list[Evaluation]):
    """A matplotlib figure of the precision-recall curves over Hamming radii 0..M of `results`,
    each labelled with its model, bits and mAP (the title, for one curve)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.5) if len(results) > 1 else (4.5, 4))
    for result in results:
        label = f"{result.model}: {result.headline}"
        ax.plot(result.recall, result.precision, marker=".", label=label)
    if len(results) == 1:
        (only,) = results
        precision, recall = only.precision, only.recall
        for radius in (0, 2, len(precision) // 4):
            ax.annotate(f"r={radius}", (recall[radius], precision[radius]), fontsize=8)
        ax.set_title(f"{only.model}\n{only.headline}", fontsize=10)
    else:
        ax.set_title("Precision-recall over Hamming radius", fontsize=10)
        ax.legend(fontsize=7, loc="lower left")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def save_pr_plot(path: Path, results: list[Evaluation]) -> None:
    """Write `pr_figure(results)` as an image (PNG, SVG, PDF by the suffix)."""
    import matplotlib.pyplot as plt

    from tbhcli.atomic import atomic_output

    fig = pr_figure(results)
    try:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, dpi=120)  # the format follows the suffix, which tmp keeps
    finally:
        plt.close(fig)
    curves = "curves" if len(results) > 1 else "curve"
    log.info("precision-recall %s written to %s", curves, shown(path))
