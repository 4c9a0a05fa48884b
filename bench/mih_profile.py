"""Where a multi-index top-k query's time goes: probes, bucket distances, candidates, Python.

    nice -n 10 .venv/bin/python bench/mih_profile.py --rows 1_000_000 --bits 64 --hasher itq

One thread, --queries held-out queries over clustered codes (bench/mih.py's generator), tables
built in memory (`mih.build_index`, m from --m or the paper's rule), best of --repeats rounds,
interleaved. Stages, each a superset of the one before and each stopping where the full search
stops for that query:
  probe     enumerate the probed substring values and look up their buckets
  distance  + the vector distance pass over every bucket code (what a checked code costs)
  kernel    + candidates: first-probe dedupe, the bounded best list, the pigeonhole stop
  topk      + opening the store's tables, query substrings, task split (`topk`, method="mih")
and the scan of the same codes (`topk`, method="scan", 1 thread), to state a probe and a checked
code in scanned rows (the planner's PROBE_COST and CHECK_COST).
"""

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np
from mih import ClusteredCodes, write_store  # bench/mih.py
from timing import best_seconds, load  # bench/timing.py

from tbhcli.hamming import mih
from tbhcli.search import as_words, topk
from tbhcli.storage.mih_tables import update_tables


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--bits", type=int, default=64)
    parser.add_argument("--hasher", default="itq")
    parser.add_argument("--m", type=int, default=None, help="substrings (default: the paper's)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    generator = ClusteredCodes(args.rows, args.bits, args.hasher)
    codes, queries = generator.database(args.rows), generator.queries(args.queries)
    words, qw = as_words(codes), as_words(queries)
    index = mih.build_index(words, args.m)
    probe = mih.Probe.of(index)
    values = mih.query_values(qw, index.bounds)
    n_q, k = len(queries), args.k
    out_d = np.empty((n_q, k), np.int32)
    out_i = np.empty((n_q, k), np.int64)
    stats = np.zeros((n_q, 4), np.int64)
    probe.search(qw, values, -1, out_d, out_i, stats, 1)
    last = stats[:, 2].copy()
    counters = stats.copy()
    folder = Path(tempfile.mkdtemp(prefix="tbh-mih-profile-"))
    try:
        store = folder / "codes.zarr"
        write_store(store, codes.shape, [(0, codes)])
        update_tables(store, build=True)
        stages = {
            f"{name}": lambda stage=stage: probe.search(
                qw, values, -1, out_d, out_i, stats, 1, stage, last
            )
            for name, stage in (("probe", 0), ("distance", 1), ("kernel", 2))
        }
        stages["topk"] = lambda: topk(store, queries, k, threads=1, method="mih")
        stages["scan"] = lambda: topk(codes, queries, k, threads=1, method="scan")
        best = best_seconds(stages, args.repeats)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    probes, checked = counters[:, 0], counters[:, 1]
    scan_row = best["scan"] / (args.rows * n_q)
    m = len(index.bounds) - 1
    print(
        f"clustered/{args.hasher} {args.rows:,} rows x {args.bits} bits, m = {m}, {n_q} queries, "
        f"k = {k}, 1 thread; load {load()}"
    )
    print(
        f"  per query: probes median {np.median(probes):,.0f} (mean {probes.mean():,.0f}), "
        f"checked codes median {np.median(checked):,.0f} (mean {checked.mean():,.0f}, "
        f"{checked.mean() / args.rows:.2%} of the rows), stop step median {np.median(last):.0f}"
    )
    previous = 0.0
    for name in ("probe", "distance", "kernel", "topk"):
        seconds = best[name]
        print(
            f"  {name:<9} {seconds:7.3f} s  {seconds / n_q * 1e3:7.3f} ms a query  "
            f"(+{seconds - previous:6.3f} s, {(seconds - previous) / best['topk']:4.0%} of topk)"
        )
        previous = seconds
    print(
        f"  scan      {best['scan']:7.3f} s  {best['scan'] / n_q * 1e3:7.3f} ms a query  "
        f"({scan_row * 1e9:.3f} ns a row x query); mih is {best['scan'] / best['topk']:.2f}x "
        f"the scan"
    )
    per_probe = best["probe"] / probes.sum()
    per_row = (best["kernel"] - best["probe"]) / max(1, checked.sum())
    print(
        f"  a probe costs {per_probe * 1e9:.0f} ns = {per_probe / scan_row:.0f} scanned rows; "
        f"a checked code (distance + candidates) {per_row * 1e9:.2f} ns = "
        f"{per_row / scan_row:.1f} scanned rows"
    )


if __name__ == "__main__":
    main()
