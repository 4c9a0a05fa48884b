"""Hamming top-k: tbh vs faiss IndexBinaryFlat vs plain NumPy, measured side by side in one run.

    .venv/bin/python bench/search.py                        # 1M and 10M rows x 32/64 bits, k = 100
    .venv/bin/python bench/search.py --store-rows 100_000_000  # + a 100M-row store, streamed

Prints queries/s, the scan rate (database bytes compared per second: rows x bytes x queries / time),
its fraction of the memory bandwidth measured here (one parallel pass over a 1 GiB array), and the
tbh / faiss ratio. Every tbh distance is checked against faiss, and the ids of a few queries
against the NumPy reference (faiss breaks ties its own way; tbh by row index).
Needs the `bench` extra (faiss-cpu).
"""

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numba
import numpy as np
from timing import load  # bench/timing.py

from tbhcli.search import topk


@numba.njit(parallel=True, cache=True)
def _read_pass(words):
    total = np.uint64(0)
    for i in numba.prange(words.shape[0]):
        total += words[i]
    return total


def memory_bandwidth(gib: float = 1.0) -> float:
    """GB/s of one parallel read pass over a `gib` GiB array (best of 5)."""
    words = np.ones(int(gib * (1 << 30)) // 8, np.uint64)
    _read_pass(words[:1024])
    best = min(_timed(lambda: _read_pass(words)) for _ in range(5))
    return words.nbytes / best / 1e9


def _timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def best_times(runs: dict, repeats: int) -> tuple[dict, dict]:
    """Best wall time of each run over `repeats` rounds, interleaved so that all of them see the
    same load from other jobs; the first round warms up (compilation, thread pools, page faults)."""
    results = {name: run() for name, run in runs.items()}
    times = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for name, run in runs.items():
            times[name] = min(times[name], _timed(run))
    return times, results


def numpy_topk(database: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """The plain NumPy way: XOR + bitwise_count + partition, one query at a time, ties by row."""
    ids = []
    for query in queries:
        dist = np.bitwise_count(database ^ query).sum(axis=1)
        kth = np.partition(dist, k - 1)[k - 1]
        below = np.flatnonzero(dist < kth)
        best = np.concatenate([below, np.flatnonzero(dist == kth)[: k - len(below)]])
        ids.append(best[np.argsort(dist[best], kind="stable")])
    return np.array(ids)


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def compare(rows: int, bits: int, n_queries: int, k: int, threads: int, repeats: int, bw: float):
    import faiss

    rng = np.random.default_rng(rows + bits)
    database = rng.integers(0, 256, (rows, bits // 8), dtype=np.uint8)
    queries = rng.integers(0, 256, (n_queries, bits // 8), dtype=np.uint8)
    index = faiss.IndexBinaryFlat(bits)
    index.add(database)
    faiss.omp_set_num_threads(threads)

    few = queries[: max(2, n_queries // 200)]
    times, results = best_times(
        {
            "tbh": lambda: topk(database, queries, k, threads=threads),
            "faiss": lambda: index.search(queries, k),
        },
        repeats,
    )
    t_numpy = _timed(lambda: numpy_topk(database, few, k))
    (dists, ids), (faiss_dists, _) = results["tbh"], results["faiss"]
    numpy_ids = numpy_topk(database, few, k)
    assert (dists == faiss_dists).all(), "tbh distances differ from faiss"
    assert (ids[: len(few)] == numpy_ids).all(), "tbh ids differ from the NumPy reference"

    scanned = rows * database.shape[1]
    rate = {
        "tbh": n_queries / times["tbh"],
        "faiss": n_queries / times["faiss"],
        "numpy": len(few) / t_numpy,
    }
    for name, qps in rate.items():
        gbs = qps * scanned / 1e9
        print(
            f"{rows:>11,} {bits:>4} {name:>6} {qps:>10,.1f} q/s {gbs:>7.1f} GB/s "
            f"{gbs / bw:>6.0%} of bw"
        )
    print(f"{'':>16} tbh/faiss = {rate['tbh'] / rate['faiss']:.2f}x   load {load()}")


def store_benchmark(rows: int, n_queries: int, k: int, threads: int) -> None:
    """Write a `rows` x 64-bit store, search it in a fresh process; report time and peak RSS."""
    import zarr

    from tbhcli.storage.store import code_chunk_rows

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "codes.zarr"
        group = zarr.open_group(path, mode="w", zarr_format=3)
        codes = group.create_array(
            "codes",
            shape=(rows, 8),
            chunks=(code_chunk_rows(64), 8),
            dtype="uint8",
            compressors=None,
        )
        rng = np.random.default_rng(0)
        start = time.perf_counter()
        step = 8 * code_chunk_rows(64)
        for first in range(0, rows, step):
            codes[first : first + step] = rng.integers(
                0, 256, (min(step, rows - first), 8), np.uint8
            )
        seconds = time.perf_counter() - start
        print(f"wrote {rows:,} x 64-bit codes ({rows * 8 / 1e9:.1f} GB) in {seconds:.0f} s")
        child = f"""
import re, time, numpy as np, zarr
from tbhcli.search import topk
queries = np.random.default_rng(1).integers(0, 256, ({n_queries}, 8), dtype=np.uint8)
topk(queries, queries, 1)  # load the compiled kernels before timing
start = time.perf_counter()
topk(zarr.open_group({str(path)!r}, mode="r")["codes"], queries, {k}, threads={threads})
seconds = time.perf_counter() - start
status = open("/proc/self/status").read()  # VmHWM: this process's peak (ru_maxrss spans exec)
peak = int(re.search(r"VmHWM:\\s+(\\d+)", status).group(1)) / 1024
print(f"store search: {n_queries} queries, k={k}: {{seconds:.1f}} s, "
      f"{{{n_queries} / seconds:.1f}} q/s, {{{rows} * 8 / seconds / 1e9:.2f}} GB/s read, "
      f"peak RSS {{peak:.0f}} MB")
"""
        subprocess.run([sys.executable, "-c", child], check=True)
        print(f"load {load()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="*", default=[1_000_000, 10_000_000])
    parser.add_argument("--bits", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--store-rows", type=int, default=0, help="also stream a store this big")
    args = parser.parse_args()

    print(f"{cpu_name()}, {os.cpu_count()} cores, {args.threads} threads; load {load()}")
    bw = memory_bandwidth()
    print(f"memory bandwidth (one pass over 1 GiB): {bw:.1f} GB/s")
    print(f"{'rows':>11} {'bits':>4} {'':>6} {'throughput':>14} {'scan rate':>12}")
    for rows in args.rows:
        n_queries = 1000 if rows <= 1_000_000 else 100
        for bits in args.bits:
            compare(rows, bits, n_queries, args.k, args.threads, args.repeats, bw)
    if args.store_rows:
        store_benchmark(args.store_rows, 100, args.k, args.threads)


if __name__ == "__main__":
    main()
