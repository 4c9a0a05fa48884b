"""Retrieval quality of binary codes: mAP@k, precision@k, precision within radius r, PR curve.

Relevant means "shares a label": equal ints for single-label data [N], any common 1 for multi-label
data [N, C]. Rankings sort by (Hamming distance, database index), so ties are broken stably by index
and every number here is reproducible (the paper's reference code used an unstable sort).
"""

import re
from collections.abc import Iterable

import numpy as np

from tbhcli.errors import TbhError

METRIC_PATTERN = re.compile(r"^(map|p)@(\d+|all)$|^p@r(\d+)$")


def parse_metric(name: str) -> tuple[str, int | None]:
    """'map@1000' -> ('map', 1000); 'map@all' -> ('map', None); 'p@r2' -> ('p@r', 2)."""
    match = METRIC_PATTERN.match(name.strip().lower())
    if not match:
        raise TbhError(f"unknown metric {name!r}; use map@K, map@all, p@K or p@rR (e.g. p@r2).")
    kind, k, radius = match.groups()
    if radius is not None:
        return "p@r", int(radius)
    if k == "all":
        return kind, None
    if int(k) == 0:  # would otherwise read as "all" wherever k is tested for truth
        raise TbhError(f"{name!r} ranks no items; use K >= 1 or {kind}@all.")
    return kind, int(k)


def relevance(query_labels: np.ndarray, db_labels: np.ndarray) -> np.ndarray:
    """Bool [Q, N]: does query q share a label with database item n."""
    if query_labels.ndim == 1:
        return query_labels[:, None] == db_labels[None, :]
    return (query_labels.astype(np.float32) @ db_labels.astype(np.float32).T) > 0


def ranked_relevance(
    query_labels: np.ndarray, db_labels: np.ndarray, ids: np.ndarray
) -> np.ndarray:
    """Bool [Q, k]: relevance of each retrieved id (ids [Q, k] from a ranking)."""
    retrieved = db_labels[ids]  # (Q, k) or (Q, k, C)
    if query_labels.ndim == 1:
        return retrieved == query_labels[:, None]
    return (retrieved & query_labels[:, None, :]).any(axis=2)


def average_precision(relevant: np.ndarray) -> np.ndarray:
    """AP of each ranked list [Q, k] -> [Q]: mean of hits/rank over relevant ranks (0 if none)."""
    hits = np.cumsum(relevant, axis=1)
    ranks = np.arange(1, relevant.shape[1] + 1)
    precision_at_hits = np.where(relevant, hits / ranks, 0.0).sum(axis=1)
    found = hits[:, -1] if relevant.shape[1] else np.zeros(len(relevant))
    return np.divide(precision_at_hits, found, out=np.zeros(len(relevant)), where=found > 0)


def label_histograms(
    db_codes,
    db_labels,
    query_codes,
    query_labels,
    threads: int | None = None,
    dask: str | None = None,
):
    """`distance_histograms` with relevance = sharing a label: (all, relevant) counts [Q, M + 1]."""
    from tbhcli.search.histograms import distance_histograms

    return distance_histograms(
        db_codes, query_codes, db_labels, query_labels, relevance, threads=threads, dask=dask
    )


def precision_within_radius(counts_all: np.ndarray, counts_rel: np.ndarray, radius: int) -> float:
    """Mean over queries of the precision within `radius`; a query retrieving nothing scores 0."""
    retrieved = counts_all[:, : radius + 1].sum(axis=1)
    relevant = counts_rel[:, : radius + 1].sum(axis=1)
    per_query = np.divide(relevant, retrieved, out=np.zeros(len(retrieved)), where=retrieved > 0)
    return float(per_query.mean())


def pr_curve(counts_all: np.ndarray, counts_rel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall [M + 1] of Hamming-ball retrieval at radius 0..M, mean over queries.

    Precision averages over the queries that retrieve something at that radius; recall over all
    queries that have any relevant item.
    """
    retrieved = np.cumsum(counts_all, axis=1).astype(np.float64)
    hits = np.cumsum(counts_rel, axis=1).astype(np.float64)
    total_relevant = hits[:, -1:]
    has_any = retrieved > 0
    per_query = np.divide(hits, retrieved, out=np.zeros_like(hits), where=has_any)
    precision = per_query.sum(axis=0) / np.maximum(has_any.sum(axis=0), 1)
    valid = total_relevant[:, 0] > 0
    recall = (hits[valid] / total_relevant[valid]).mean(axis=0) if valid.any() else hits[0] * 0
    return precision, recall


def evaluate_codes(
    db_codes: np.ndarray,
    db_labels: np.ndarray,
    query_codes: np.ndarray,
    query_labels: np.ndarray,
    metrics: Iterable[str] = ("map@1000",),
    threads: int | None = None,
    dask: str | None = None,
) -> dict[str, float]:
    """Compute the named metrics (see `parse_metric`) of packed codes against labels.

    `db_codes` is a packed uint8 array [N, bits / 8] or an open CodeStore, which is then read
    block by block (and, with `dask`, searched on a Dask cluster). Ranked metrics use
    `tbhcli.search.topk`, exact with ties broken by database index; k larger than the database
    is clamped to its size. The radius metrics (`p@rR`) scan with the same `threads` / `dask`.
    """
    from tbhcli.search import topk

    parsed = {name: parse_metric(name) for name in metrics}
    if len(db_codes) == 0 or len(query_codes) == 0:
        raise TbhError("cannot evaluate: the database or the query set is empty.")
    results: dict[str, float] = {}
    ranked = [(n, kind, k) for n, (kind, k) in parsed.items() if kind in ("map", "p")]
    if ranked:
        deepest = max(min(k or len(db_codes), len(db_codes)) for _, _, k in ranked)
        _, ids = topk(db_codes, query_codes, deepest, threads=threads, dask=dask)
        relevant = ranked_relevance(query_labels, db_labels, ids)
        for name, kind, k in ranked:
            top = relevant[:, : min(k or len(db_codes), len(db_codes))]
            score = average_precision(top) if kind == "map" else top.mean(axis=1)
            results[name] = float(score.mean())
    radii = [(n, r) for n, (kind, r) in parsed.items() if kind == "p@r"]
    if radii:
        counts_all, counts_rel = label_histograms(
            db_codes, db_labels, query_codes, query_labels, threads=threads, dask=dask
        )
        for name, radius in radii:
            results[name] = precision_within_radius(counts_all, counts_rel, radius)
    return {name: results[name] for name in parsed}
