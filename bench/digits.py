"""Write a second real feature set for docs/results.md: scikit-learn's 8x8 handwritten digits.

    .venv/bin/python bench/digits.py --out digits     # digits/db.npy, digits/queries.npy (+ labels)

The 1,797 digits (UCI "optdigits" test set, 64 pixel intensities 0-16, 10 classes) ship inside
scikit-learn, so this works offline. Features are the pixels scaled to [0, 1]; 30 queries per
class (300) are held out with the demo's stratified split, the other 1,497 are the database and
training set. Then build the table with bench/results.py (see docs/results.md).
"""

import argparse
from pathlib import Path

import numpy as np

from tbhcli.apps.demo_data import stratified_split
from tbhcli.imaging.featureset import save_features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("digits"))
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args()
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    labels = digits.target.astype(np.int64)
    is_query = stratified_split(labels, args.queries, seed=0)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("db", ~is_query), ("queries", is_query)):
        path = save_features(args.out / f"{name}.npy", x[rows], labels[rows])
        print(f"wrote {path}: {rows.sum()} x {x.shape[1]}")


if __name__ == "__main__":
    main()
