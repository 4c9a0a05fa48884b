"""Exact top-k by multi-index hashing vs tbh's scan vs faiss, on realistic clustered codes, one run.

    nice -n 10 .venv/bin/python bench/mih.py --rows 1_000_000 --bits 32 64 128
    nice -n 10 .venv/bin/python bench/mih.py --rows 10_000_000 --bits 64 --hashers itq lsh

Codes: features from a mixture of many Gaussians in 128-d (rows / 200 clusters, clamped to
[10^4, 10^5], Zipf-like heavy-tailed sizes, per-cluster spreads), hashed by ITQ and by LSH fitted
on 20,000 of them; queries are held-out draws of the same mixture (`clustered_codes`). Each
configuration writes a code store, builds its multi-index tables (`tbh index --multi-index`'s
`update_tables`), and times, interleaved (best of --repeats): tbh `topk` by scan, by multi-index
and auto, faiss IndexBinaryMultiHash (recall at its cheapest setting with recall >= 0.99), and,
for the --ann-bits widths up to --ann-rows rows, faiss IndexBinaryHNSW and IndexBinaryIVF at
recall 0.95 and 0.99. tbh's three methods are checked to be identical. `--uniform` adds uniform
random codes (auto must stay within 5 % of the scan). Recall counts ties: a returned row is a hit
when its distance is <= the exact k-th distance. Needs the `bench` extra (faiss-cpu).
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr
from search import best_times, cpu_name, load  # bench/search.py

from tbhcli.hashing.baselines import fit_baseline
from tbhcli.search import topk
from tbhcli.storage.mih_tables import open_tables, update_tables
from tbhcli.storage.store import code_chunk_rows, open_store

DIM = 128
BLOCK = 250_000  # rows generated at a time: bounds the float features in memory
QUERY_SEED = 10**6  # block seeds of held-out queries start here


class ClusteredFeatures:
    """A mixture of Gaussians in DIM-d: Zipf-like weights, N(0, I) centres, per-cluster spreads."""

    def __init__(self, rows: int, seed: int = 0):
        rng = np.random.default_rng([seed, 999_999_999])
        self.clusters = int(np.clip(rows // 200, 10**4, 10**5))
        weights = 1.0 / np.arange(1, self.clusters + 1) ** 1.1  # Zipf-like sizes
        self.weights = rng.permutation(weights / weights.sum())
        self.centres = rng.standard_normal((self.clusters, DIM)).astype(np.float32)
        self.spread = (0.15 + 0.45 * rng.random(self.clusters)).astype(np.float32)
        self.seed = seed

    def block(self, b: int, n: int) -> np.ndarray:
        """n feature vectors [n, DIM] from rng([seed, b]) (only the hashers' fit uses them)."""
        rng = np.random.default_rng([self.seed, b])
        which = rng.choice(self.clusters, n, p=self.weights)
        noise = rng.standard_normal((n, DIM), dtype=np.float32)
        return self.centres[which] + self.spread[which, None] * noise


class ClusteredCodes:
    """Codes [(x - mean) P >= 0] of the mixture's draws x = c + s z, drawn in the code space.

    Hashing is linear up to the sign, so (x - mean) P = (c - mean) P + s (z P) with z P ~
    N(0, P^T P): a draw needs `bits` normals instead of DIM and no DIM-d arithmetic, and the codes
    have exactly the distribution of hashing DIM-d draws (not the same draws for a seed). Block b
    of rows comes from rng([seed, b]), so any block can be drawn alone, in any order.
    """

    def __init__(self, rows: int, bits: int, hasher: str, seed: int = 0):
        self.mixture = ClusteredFeatures(rows, seed)
        fit = self.mixture.block(QUERY_SEED + 1, 20_000)
        encoder = fit_baseline(hasher, fit, bits, seed)
        mean = encoder.mean.numpy()
        projection = encoder.projection.numpy()
        self.centres = ((self.mixture.centres - mean) @ projection).astype(np.float32)
        # z P = u L^T with u ~ N(0, I_bits) and L L^T = P^T P (full rank: bits <= DIM)
        self.factor = np.linalg.cholesky(projection.T @ projection).T.astype(np.float32)
        self.bits = bits

    def block(self, b: int, n: int) -> np.ndarray:
        """Packed codes uint8 [n, bits/8] of n draws from rng([seed, b])."""
        mixture = self.mixture
        rng = np.random.default_rng([mixture.seed, b])
        which = rng.choice(mixture.clusters, n, p=mixture.weights)
        noise = rng.standard_normal((n, self.bits), dtype=np.float32) @ self.factor
        noise *= mixture.spread[which, None]
        noise += self.centres[which]
        return np.packbits(noise >= 0, axis=1)

    def blocks(self, rows: int):
        """(first row, codes) of database rows [0, rows), BLOCK rows at a time."""
        for b, start in enumerate(range(0, rows, BLOCK)):
            yield start, self.block(b, min(BLOCK, rows - start))

    def database(self, rows: int) -> np.ndarray:
        codes = np.empty((rows, self.bits // 8), np.uint8)
        for start, block in self.blocks(rows):
            codes[start : start + len(block)] = block
        return codes

    def queries(self, n: int) -> np.ndarray:
        """Held-out queries: the same mixture, a block no database row comes from."""
        return self.block(QUERY_SEED, n)


def clustered_codes(rows: int, n_queries: int, bits: int, hasher: str, seed: int = 0):
    """(database codes uint8 [rows, bits/8], held-out query codes [n_queries, bits/8])."""
    generator = ClusteredCodes(rows, bits, hasher, seed)
    return generator.database(rows), generator.queries(n_queries)


def write_store(path: Path, shape: tuple[int, int], blocks) -> None:
    """A code store of `shape` codes given as (first row, codes) blocks, chunked as `tbh index`
    does, with placeholder paths and no labels."""
    group = zarr.open_group(path, mode="w", zarr_format=3)
    n, bits = shape[0], shape[1] * 8
    array = group.create_array(
        "codes", shape=shape, chunks=(code_chunk_rows(bits), shape[1]), dtype="uint8",
        compressors=None,
    )  # fmt: skip
    for start, block in blocks:
        array[start : start + len(block)] = block
    paths = group.create_array("paths", shape=(n,), dtype=str, chunks=(1 << 20,))
    labels = group.create_array("labels", shape=(n,), dtype=np.int32, chunks=(1 << 20,))
    for start in range(0, n, 1 << 20):  # every chunk: opening a store checks that they exist
        stop = min(n, start + (1 << 20))
        paths[start:stop] = np.full(stop - start, "x.jpg", dtype=object)
        labels[start:stop] = -1
    group.attrs.update(
        {"format_version": 1, "bits": bits, "rows_committed": n, "root": ".", "classes": [],
         "model_sha256": "0" * 64}
    )  # fmt: skip


def recall(found_d: np.ndarray, exact_d: np.ndarray) -> float:
    """Share of returned rows within the exact k-th distance (ties count as hits)."""
    return float((found_d <= exact_d[:, -1:]).mean())


def sweep(name, make, settings, set_param, queries, k, exact_d, threads, targets):
    """q/s at the cheapest setting reaching each recall target (or the best reached)."""
    import faiss

    faiss.omp_set_num_threads(threads)
    started = time.perf_counter()
    index = make()
    build = time.perf_counter() - started
    rows, reached = [], {t: None for t in targets}
    for setting in settings:
        set_param(index, setting)
        times, results = best_times({"x": lambda: index.search(queries, k)}, 1)
        got = recall(results["x"][0], exact_d)
        rows.append((setting, got, len(queries) / times["x"]))
        for t in targets:
            if reached[t] is None and got >= t:
                reached[t] = rows[-1]
        if all(reached.values()):
            break
    for t in targets:
        setting, got, qps = reached[t] or max(rows, key=lambda r: r[1])
        flag = "" if reached[t] else f" (never reached {t})"
        print(
            f"    faiss {name:<10} recall>={t:.2f}: {qps:>9,.0f} q/s at {setting} "
            f"(recall {got:.4f}){flag}; build {build:.0f} s"
        )
    return reached


def compare(codes, queries, k, threads, repeats, ann: bool, label: str) -> None:
    """One configuration: store + tables, tbh scan/mih/auto, faiss MultiHash (+ HNSW, IVF)."""
    import faiss

    rows, bits = codes.shape[0], codes.shape[1] * 8
    folder = Path(tempfile.mkdtemp(prefix="tbh-mih-"))
    try:
        store = folder / "codes.zarr"
        write_store(store, codes.shape, [(0, codes)])
        started = time.perf_counter()
        update_tables(store, build=True)
        build = time.perf_counter() - started
        tables = sum(f.stat().st_size for f in (store / "mih").rglob("*") if f.is_file())
        m = len(open_tables(open_store(store)).bounds) - 1
        runs = {
            method: (lambda method=method: topk(store, queries, k, threads, method=method))
            for method in ("scan", "mih", "auto")
        }
        times, results = best_times(runs, repeats)
        for method in ("mih", "auto"):
            for got, want in zip(results[method], results["scan"], strict=True):
                assert (got == want).all(), f"{method} differs from the scan"
        qps = {name: len(queries) / t for name, t in times.items()}
        print(
            f"{label}: {rows:,} x {bits} bits, m = {m}, tables {tables / codes.nbytes:.2f} x "
            f"the codes, built in {build:.1f} s; load {load()}"
        )
        print(
            f"    tbh scan {qps['scan']:>9,.0f} q/s   mih {qps['mih']:>9,.0f} q/s "
            f"({qps['mih'] / qps['scan']:.1f}x)   auto {qps['auto']:>9,.0f} q/s "
            f"({qps['auto'] / qps['scan']:.2f}x the scan)"
        )
        exact_d = results["scan"][0]
        width = bits // m

        def multihash():
            index = faiss.IndexBinaryMultiHash(bits, m, width)
            index.add(codes)
            return index

        sweep("MultiHash", multihash, [0, 1, 2, 3], lambda i, s: setattr(i, "nflip", s),
              queries, k, exact_d, threads, [0.99])  # fmt: skip
        if ann:
            nlist = int(4 * np.sqrt(rows))

            def hnsw():
                index = faiss.IndexBinaryHNSW(bits, 16)
                index.add(codes)
                return index

            def ivf():
                index = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(bits), bits, nlist)
                index.train(codes[:: max(1, rows // (50 * nlist))])
                index.add(codes)
                return index

            sweep("HNSW", hnsw, [16, 32, 64, 128, 256, 512, 1024],
                  lambda i, s: setattr(i.hnsw, "efSearch", s), queries, k, exact_d, threads,
                  [0.95, 0.99])  # fmt: skip
            sweep("IVF", ivf, [1, 2, 4, 8, 16, 32, 64, 128, 256],
                  lambda i, s: setattr(i, "nprobe", s), queries, k, exact_d, threads,
                  [0.95, 0.99])  # fmt: skip
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def store_benchmark(rows: int, bits: int, hasher: str, n_queries: int, k: int, threads: int):
    """A rows-row clustered store written block by block, its tables built; each method then
    searches it in a fresh process (time, peak RSS); results are checked equal."""
    generator = ClusteredCodes(rows, bits, hasher)
    folder = Path(tempfile.mkdtemp(prefix="tbh-mih-"))
    try:
        store = folder / "codes.zarr"
        started = time.perf_counter()
        write_store(store, (rows, bits // 8), generator.blocks(rows))
        written = time.perf_counter() - started
        started = time.perf_counter()
        update_tables(store, build=True)
        build = time.perf_counter() - started
        tables = sum(f.stat().st_size for f in (store / "mih").rglob("*") if f.is_file())
        m = len(open_tables(open_store(store)).bounds) - 1
        print(
            f"store clustered/{hasher}: {rows:,} x {bits} bits ({rows * bits / 8e9:.1f} GB) drawn "
            f"and written in {written:.0f} s; tables (m = {m}) built in {build:.0f} s, "
            f"{tables / (rows * bits / 8):.2f} x the codes; load {load()}"
        )
        np.save(folder / "queries.npy", generator.queries(n_queries))
        for method in ("scan", "mih", "auto"):
            child = rf"""
import re, time, numpy as np
from tbhcli.search import topk
queries = np.load({str(folder / "queries.npy")!r})
topk(queries, queries, 1, method="mih")  # compile the kernels before timing
start = time.perf_counter()
found = topk({str(store)!r}, queries, {k}, threads={threads}, method={method!r})
seconds = time.perf_counter() - start
np.save({str(folder / method)!r} + ".npy", np.stack(found))
peak = int(re.search(r"VmHWM:\s+(\d+)", open("/proc/self/status").read()).group(1)) / 1024
print(f"    {method:<4} {{seconds:6.2f}} s  {{len(queries) / seconds:8,.1f}} q/s  peak RSS "
      f"{{peak:,.0f}} MB")
"""
            subprocess.run([sys.executable, "-c", child], check=True)
        scan = np.load(folder / "scan.npy")
        for method in ("mih", "auto"):
            assert (np.load(folder / f"{method}.npy") == scan).all(), f"{method} differs"
        print(f"    load {load()}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--bits", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--hashers", nargs="+", default=["itq", "lsh"])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ann-rows", type=int, default=1_000_000, help="HNSW/IVF up to this")
    parser.add_argument("--ann-bits", type=int, nargs="*", default=[64])
    parser.add_argument("--uniform", action="store_true", help="also uniform random codes")
    parser.add_argument("--store-rows", type=int, default=0, help="a clustered store this big")
    args = parser.parse_args()
    if args.store_rows:
        for hasher in args.hashers:
            store_benchmark(args.store_rows, args.bits[0], hasher, 100, args.k, args.threads)
        return
    print(f"{cpu_name()}, {os.cpu_count()} cores, {args.threads} threads; load {load()}")
    for rows in args.rows:
        for bits in args.bits:
            for hasher in args.hashers:
                started = time.perf_counter()
                codes, queries = clustered_codes(rows, args.queries, bits, hasher)
                label = f"clustered/{hasher} (generated in {time.perf_counter() - started:.0f} s)"
                ann = rows <= args.ann_rows and bits in args.ann_bits
                compare(codes, queries, args.k, args.threads, args.repeats, ann, label)
            if args.uniform:
                rng = np.random.default_rng(rows + bits)
                codes = rng.integers(0, 256, (rows, bits // 8), dtype=np.uint8)
                queries = rng.integers(0, 256, (args.queries, bits // 8), dtype=np.uint8)
                compare(codes, queries, args.k, args.threads, args.repeats, False, "uniform")


if __name__ == "__main__":
    main()
