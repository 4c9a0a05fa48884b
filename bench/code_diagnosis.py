"""Where does a trained hasher lose retrieval quality: in its subspace or in its binarisation?

    .venv/bin/python bench/code_diagnosis.py RUN [RUN ...] --db demo/features.npy \\
        --queries demo/queries.npy

For each run (TBH or a baseline), with the run's own M-dimensional logits (the sign encoder's
output before `> 0`):
- `codes`: mAP@1000 of the run's own codes, [logit > 0];
- `median`: the same logits cut at each bit's training median (perfectly balanced bits);
- `itq(logits)`: ITQ refitted on the run's logits (centre, PCA, rotation): the best a linear
  binarisation of the *same* M-dimensional subspace reaches;
- bit balance (min / max fraction of ones) and mean |correlation| between bits.
ITQ on the input features is the reference column. If `itq(logits)` is close to ITQ on the
features while `codes` is far below, the learned subspace is as good as PCA's and the loss is in
how the hyperplanes are placed and oriented. First of all it prints the ceiling that no hashing
of these features is likely to pass: mAP@1000 of exact real-valued retrieval on the features
themselves (Euclidean, and cosine after centring).
"""

import argparse
from pathlib import Path

import numpy as np
import torch

from tbhcli.evaluation.metrics import average_precision, evaluate_codes, ranked_relevance
from tbhcli.hashing import runs
from tbhcli.hashing.baselines import fit_baseline
from tbhcli.hashing.codes import pack_bits
from tbhcli.imaging.featureset import load_features

METRIC = "map@1000"
TOP = 1000


def score(db_bits: np.ndarray, q_bits: np.ndarray, db, queries) -> float:
    packed = pack_bits(db_bits), pack_bits(q_bits)
    return evaluate_codes(packed[0], db.labels, packed[1], queries.labels, (METRIC,))[METRIC]


def itq_bits(bits: int, train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """ITQ with `bits` bits (seed 0) fitted on `train` [N, K], applied to it and to `others`."""
    encoder = fit_baseline("itq", train, bits, seed=0)
    with torch.no_grad():
        return [(encoder(torch.from_numpy(a).float()) > 0).numpy() for a in (train, *others)]


def real_valued_map(db, queries, cosine: bool) -> float:
    """mAP@1000 of exact retrieval by Euclidean (or centred cosine) distance on the features."""
    x, q = db.features.astype(np.float64), queries.features.astype(np.float64)
    if cosine:
        mean = x.mean(axis=0)
        x, q = (a - mean for a in (x, q))
        x, q = (a / np.linalg.norm(a, axis=1, keepdims=True) for a in (x, q))
        dist = -q @ x.T  # (Q, N)
    else:
        dist = (q**2).sum(1)[:, None] - 2 * q @ x.T + (x**2).sum(1)[None, :]  # (Q, N)
    ids = np.argsort(dist, axis=1, kind="stable")[:, :TOP]  # ties by database index
    return float(average_precision(ranked_relevance(queries.labels, db.labels, ids)).mean())


@torch.no_grad()
def logits(run: runs.Run, features: np.ndarray) -> np.ndarray:
    run.encoder.eval()
    return run.encoder(torch.from_numpy(features).float()).double().numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--queries", type=Path, required=True)
    args = parser.parse_args()
    db = load_features(args.db, require_labels=True)
    queries = load_features(args.queries, require_labels=True)
    euclidean, cosine = real_valued_map(db, queries, False), real_valued_map(db, queries, True)
    print(f"real-valued retrieval on the features: {METRIC} {euclidean:.3f} (Euclidean),", end=" ")
    print(f"{cosine:.3f} (cosine, centred)\n")
    columns = ["run", "bits", "codes", "median", "itq(logits)", "ITQ on features"]
    columns += ["ones min–max", "mean abs corr"]
    print("| " + " | ".join(columns) + " |")
    print("|---" * len(columns) + "|")
    reference: dict[int, float] = {}
    for path in args.runs:
        run = runs.load_run(path)
        m = run.bits
        if m not in reference:
            reference[m] = score(*itq_bits(m, db.features, queries.features), db, queries)
        ld, lq = logits(run, db.features), logits(run, queries.features)
        bits = ld > 0
        median = np.median(ld, axis=0)
        with np.errstate(invalid="ignore"):  # a constant bit has no correlation (nan, skipped)
            corr = np.corrcoef(bits.T.astype(np.float64))
        off = np.abs(corr[~np.eye(m, dtype=bool)])
        ones = bits.mean(axis=0)
        row = [
            score(bits, lq > 0, db, queries),
            score(ld > median, lq > median, db, queries),
            score(*itq_bits(m, ld, lq), db, queries),
            reference[m],
        ]
        cells = [f"{path.parent.name}/{path.name}", str(m), *(f"{v:.3f}" for v in row)]
        cells += [f"{ones.min():.2f}–{ones.max():.2f}", f"{np.nanmean(off):.2f}"]
        print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
