"""Label-free validation: hold out a slice of the training features and score neighbour recall.

A hasher exists to keep each item's neighbours near it in Hamming space, so that is what we score:
for every held-out item, the fraction of its true top-k neighbours among the training items
(Euclidean or cosine, ties to the lower row) that the Hamming ranking of its code puts in its own
top-k (ties to the lower row too). No labels are needed; when the features have labels, mAP@1000
of the same rankings is reported beside it. Every method (TBH, ITQ, PCAH, LSH) is scored on the
same split, so their numbers can be compared directly.
"""

from dataclasses import dataclass

import numpy as np
import torch

from tbhcli.errors import TbhError
from tbhcli.hashing.codes import pack_bits
from tbhcli.imaging.featureset import FeatureSet
from tbhcli.training.options import DISTANCES, NEIGHBOURS

MAX_HELD_OUT = 2000  # enough for a stable score; more only costs time
LABEL_METRIC = "map@1000"
_QUERY_BLOCK = 64  # held-out rows per distance block: bounds memory on large training sets


def recall_name(k: int = NEIGHBOURS) -> str:
    return f"recall@{k}"


@dataclass
class Split:
    """The training items and the held-out items of one feature set, by row."""

    train: np.ndarray  # int64 [N_train], sorted
    held_out: np.ndarray  # int64 [N_val], sorted


def split_rows(n: int, fraction: float, seed: int, max_held_out: int = MAX_HELD_OUT) -> Split:
    """Hold out `fraction` of n rows (at most `max_held_out`), chosen by `seed`."""
    if not 0 <= fraction < 1:
        raise TbhError(f"--val-fraction must be in [0, 1) (got {fraction}).")
    n_val = min(int(round(n * fraction)), max_held_out)
    if fraction > 0 and n_val < 1:
        raise TbhError(f"--val-fraction {fraction} of {n} items holds out none; raise it or use 0.")
    order = np.random.default_rng(seed).permutation(n)
    return Split(np.sort(order[n_val:]), np.sort(order[:n_val]))


def true_neighbours(db: np.ndarray, queries: np.ndarray, k: int, distance: str) -> np.ndarray:
    """The k nearest rows of `db` [N, D] for each query [Q, D], ties to the lower row: [Q, k]."""
    if distance not in DISTANCES:
        raise TbhError(f"distance must be one of {', '.join(DISTANCES)} (got {distance!r}).")
    db = np.asarray(db, np.float64)
    queries = np.asarray(queries, np.float64)
    if distance == "cosine":
        db = db / np.maximum(np.linalg.norm(db, axis=1, keepdims=True), 1e-12)
        queries = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    k = min(k, len(db))
    db_sq = (db**2).sum(axis=1)
    out = np.empty((len(queries), k), np.int64)
    for start in range(0, len(queries), _QUERY_BLOCK):
        q = queries[start : start + _QUERY_BLOCK]
        d = db_sq[None, :] - 2 * q @ db.T  # (B, N): squared distance minus the query's own norm
        kth = np.partition(d, k - 1, axis=1)[:, k - 1]
        for i, row in enumerate(d):
            candidates = np.flatnonzero(row <= kth[i])  # the k nearest and any ties at the kth
            order = np.lexsort((candidates, row[candidates]))[:k]
            out[start + i] = candidates[order]
    return out


def neighbour_recall(truth: np.ndarray, db_codes: np.ndarray, query_codes: np.ndarray) -> float:
    """Mean fraction of each query's true neighbours [Q, k] in its Hamming top-k (packed codes)."""
    from tbhcli.search import topk

    k = truth.shape[1]
    _, found = topk(db_codes, query_codes, k, threads=1)
    hits = [np.intersect1d(t, f).size for t, f in zip(truth, found, strict=True)]
    return float(np.mean(hits)) / k


class Validator:
    """Scores an encoder (features -> logits) on a split: neighbour recall@k (+ mAP@1000)."""

    def __init__(
        self,
        data: FeatureSet,
        split: Split,
        device: torch.device,
        k: int = NEIGHBOURS,
        distance: str = "euclidean",
    ):
        self.train_x = torch.from_numpy(data.features[split.train]).to(device)
        self.val_x = torch.from_numpy(data.features[split.held_out]).to(device)
        self.truth = true_neighbours(
            data.features[split.train], data.features[split.held_out], k, distance
        )
        self.metric = recall_name(k)
        labels = data.labels
        self.labels = None if labels is None else (labels[split.train], labels[split.held_out])

    @torch.no_grad()
    def codes(self, encoder: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
        was_training = encoder.training
        encoder.eval()
        logits = torch.cat([encoder(x[i : i + 8192]) for i in range(0, len(x), 8192)])
        encoder.train(was_training)
        return pack_bits((logits > 0).cpu().numpy())

    def __call__(self, encoder: torch.nn.Module) -> dict[str, float]:
        """{"recall@100": r} (+ {"map@1000": m} with labels) of `encoder` on the held-out items."""
        db, q = self.codes(encoder, self.train_x), self.codes(encoder, self.val_x)
        scores = {self.metric: neighbour_recall(self.truth, db, q)}
        if self.labels is not None:
            from tbhcli.evaluation.metrics import evaluate_codes

            db_labels, q_labels = self.labels
            scores |= evaluate_codes(db, db_labels, q, q_labels, (LABEL_METRIC,), threads=1)
        return scores
