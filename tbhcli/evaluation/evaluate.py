"""`tbh evaluate`: retrieval quality of a trained hasher, on feature sets or on a code store.

Two sources of codes, one set of metrics (tbhcli.evaluation.metrics):
- feature level: `--run runs/NAME --database db.npy --query-features q.npy` encodes both with
  the run;
- store level (the default): the store's codes against its recorded query set (or
  `--query-store`).
Both give the same number for the same model and images, since the store holds the same codes.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tbhcli.errors import TbhError
from tbhcli.evaluation.metrics import evaluate_codes, label_histograms, parse_metric, pr_curve
from tbhcli.hashing.runs import load_run
from tbhcli.imaging.featureset import check_label_kinds, load_features
from tbhcli.storage.store import CodeStore, open_store
from tbhcli.workspace import resolve_run, resolve_store


@dataclass
class LabelledCodes:
    """Packed codes [N, bits / 8] (an array or an open CodeStore) with labels, and their source."""

    codes: np.ndarray | CodeStore
    labels: np.ndarray
    source: str


@dataclass
class Evaluation:
    """Metric values by name, plus the PR curve when asked for."""

    scores: dict[str, float]
    database: str
    queries: str
    precision: np.ndarray | None = field(default=None, repr=False)
    recall: np.ndarray | None = field(default=None, repr=False)

    def to_json(self) -> str:
        return json.dumps(self.scores)


def encode_feature_set(run_path: Path, features_path: Path) -> LabelledCodes:
    """Encode a labelled feature set with a run's sign encoder."""
    feature_set = load_features(features_path, require_labels=True)
    codes = load_run(run_path).encode(feature_set.features)
    return LabelledCodes(codes, feature_set.labels, str(features_path))


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
    return (
        LabelledCodes(database, db_labels, str(store_path)),
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
    store's recorded query set.

    `dask` ("local" or a scheduler address) ranks a store's blocks on a Dask cluster.
    """
    metrics = metric or ["map@1000"]
    for name in metrics:
        parse_metric(name)  # fail on a typo before any work
    if plot is not None:
        check_plot_path(plot)
    if database is not None:
        if query_features is None:
            raise TbhError(
                "--database needs --query-features FEATURES.npy (labelled held-out queries)."
            )
        run_path = resolve_run(run)
        db = encode_feature_set(run_path, database)
        q = encode_feature_set(run_path, query_features)
    else:
        if query_features is not None:
            raise TbhError(
                "--query-features needs --database FEATURES.npy; for a store pass "
                "--query-store STORE."
            )
        db, q = store_codes(resolve_store(store), query_store)
    check_label_kinds(db.labels, q.labels)
    scores = evaluate_codes(
        db.codes, db.labels, q.codes, q.labels, metrics, threads=threads, dask=dask
    )
    result = Evaluation(scores, db.source, q.source)
    if plot is not None:
        counts = label_histograms(db.codes, db.labels, q.codes, q.labels)
        result.precision, result.recall = pr_curve(*counts)
        save_pr_plot(plot, result.precision, result.recall)
    return result


def check_plot_path(path: Path) -> None:
    """Refuse an image type matplotlib cannot write before the search runs, not after it."""
    from matplotlib.backend_bases import FigureCanvasBase

    suffix = Path(path).suffix.lstrip(".").lower()
    if suffix and suffix not in FigureCanvasBase.get_supported_filetypes():
        raise TbhError(f"--plot {path}: unknown image type .{suffix}; use .png, .svg or .pdf.")


def save_pr_plot(path: Path, precision: np.ndarray, recall: np.ndarray) -> None:
    """Write the precision-recall curve over Hamming radii 0..M as an image (PNG, SVG, PDF)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot(recall, precision, marker=".")
    for radius in (0, 2, len(precision) // 4):
        ax.annotate(f"r={radius}", (recall[radius], precision[radius]), fontsize=8)
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02))
    ax.set_title("Precision-recall over Hamming radius")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
