"""Where the exact scan's time goes: tile loading, the distance loop, top-k selection, Python.

    nice -n 10 .venv/bin/python bench/scan_profile.py --rows 2_000_000 --bits 64

One thread, one block of --queries queries over uniform random codes, best of --repeats rounds,
interleaved. Stages, each a superset of the one before:
  load      copy every tile of rows into the words-first tile layout (`kernels._load_tile`)
  distance  + XOR / popcount / sum and the fused candidate count (`kernels._tile_distances`)
  kernel    + candidate tests and the top-k selection (`kernels.scan_topk`): the real kernel
  topk      + task split, result merge and Python (`tbhcli.search.topk`, threads=1)
and the distance loop's rate as a share of the popcount peak: one 512-bit VPOPCNTQ (8 words) per
cycle at the clock given (--ghz, default the one /proc/cpuinfo reports).
"""

import argparse
from pathlib import Path

import numpy as np
from numba import njit
from timing import best_seconds, load  # bench/timing.py

from tbhcli.hamming.kernels import SUB, TILE, _load_tile, _tile_distances, scan_topk
from tbhcli.search import as_words, topk


@njit(cache=True, nogil=True)
def load_only(db):
    tile = np.empty((db.shape[1], TILE), db.dtype)
    total = 0
    for start in range(0, db.shape[0], TILE):
        n = min(TILE, db.shape[0] - start)
        _load_tile(db, start, n, tile)
        total += tile[0, 0]
    return total


@njit(cache=True, nogil=True)
def distance_only(db, queries, below):
    tile = np.empty((db.shape[1], TILE), db.dtype)
    dist = np.empty((TILE // SUB, SUB), db.dtype)
    total = 0
    for start in range(0, db.shape[0], TILE):
        n = min(TILE, db.shape[0] - start)
        _load_tile(db, start, n, tile)
        for a in range(queries.shape[0]):
            total += _tile_distances(tile, n, queries[a], dist, below)
    return total


def clock_ghz() -> float:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("cpu MHz"):
            return float(line.split(":")[1]) / 1000
    return 3.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--bits", type=int, default=64)
    parser.add_argument("--queries", type=int, default=256)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ghz", type=float, default=None)
    args = parser.parse_args()
    ghz = args.ghz or clock_ghz()
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (args.rows, args.bits // 8), dtype=np.uint8)
    queries = rng.integers(0, 256, (args.queries, args.bits // 8), dtype=np.uint8)
    db, qw = as_words(codes), as_words(queries)
    out_d = np.empty((args.queries, args.k), np.int32)
    out_i = np.empty((args.queries, args.k), np.int64)
    stages = {
        "load": lambda: load_only(db),
        "distance": lambda: distance_only(db, qw, db.dtype.type(0)),
        "kernel": lambda: scan_topk(db, qw, 0, len(db), args.k, 0, out_d, out_i),
        "topk": lambda: topk(codes, queries, args.k, threads=1),
    }
    best = best_seconds(stages, args.repeats)
    pairs = args.rows * args.queries
    words = pairs * db.shape[1] * db.itemsize / 8
    print(f"{args.rows:,} rows x {args.bits} bits, {args.queries} queries, k = {args.k}, "
          f"1 thread, {ghz:.2f} GHz; load {load()}")  # fmt: skip
    previous = 0.0
    for name, seconds in best.items():
        print(
            f"  {name:<9} {seconds:7.3f} s  {seconds / pairs * 1e9:6.3f} ns per row x query  "
            f"(+{seconds - previous:6.3f} s, {(seconds - previous) / best['topk']:4.0%} of topk)"
        )
        previous = seconds
    rate = words / (best["distance"] - best["load"])
    print(
        f"  distance loop: {rate / 1e9:.1f} G 64-bit words/s = {rate / (8e9 * ghz):.0%} of one "
        f"VPOPCNTQ per cycle; whole topk: {words / best['topk'] / (8e9 * ghz):.0%}"
    )


if __name__ == "__main__":
    main()
