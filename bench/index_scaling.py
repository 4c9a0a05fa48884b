"""Scaling of `tbh index --dask local`, 1 and 2 single-threaded workers, against plain `tbh index`.

    .venv/bin/python bench/index_scaling.py --images 20000 --jpegs /tmp/jpegs-20k
    .venv/bin/python bench/index_scaling.py --images 20000 --jpegs /tmp/jpegs-20k \\
        --backbone efficientnet-lite0 --size 64

Writes N synthetic 256x256 JPEGs once (kept in --jpegs for reruns), exports an LSH run on the
backbone, then indexes the same folder into fresh stores: plain `tbh index` (decode processes =
cores, onnxruntime in the main process), then `--dask local` with 1 and 2 worker processes of
one thread each. Every store is checked against the plain one row for row. Prints images/s
(indexing only, and wall time including the cluster's start), the time the client spent in
store commits, the load average around each run (the machine is shared), and the ratios
2 workers / 1 worker and 2 workers / plain.
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from index_throughput import export_lsh, write_jpegs

from tbhcli.indexing.index import index
from tbhcli.storage.store import open_store
from tbhcli.storage.writer import StoreWriter


class CommitTimer:
    """Adds up the client's time in `StoreWriter.append` (grow, write, fsync, commit)."""

    def __init__(self):
        self.seconds, self.calls = 0.0, 0
        self.original = StoreWriter.append

    def __enter__(self):
        timer = self

        def timed(writer, *args):
            began = time.perf_counter()
            timer.original(writer, *args)
            timer.seconds += time.perf_counter() - began
            timer.calls += 1

        StoreWriter.append = timed
        return self

    def __exit__(self, *exc):
        StoreWriter.append = self.original


def images_folder(path: Path, n: int) -> Path:
    """The folder of N JPEGs at `path`, written unless a previous run left them complete."""
    done = path / f".complete-{n}"
    if not done.exists():
        write_jpegs(path, n)
        done.touch()
    return path


def run(label: str, images: Path, store: Path, model: Path, **kw) -> dict:
    load_before = os.getloadavg()[0]
    with CommitTimer() as commits:
        began = time.perf_counter()
        report = index(images, store=store, model=model, device="cpu", **kw)
        wall = time.perf_counter() - began
    figures = {
        "label": label,
        "rate": report.images_per_s,
        "wall_rate": report.added / wall,
        "commit_ms": 1e3 * commits.seconds / max(1, commits.calls),
        "commit_share": commits.seconds / report.seconds,
        "load": (load_before, os.getloadavg()[0]),
    }
    print(
        f"{label:22s} {figures['rate']:7.1f} img/s  (wall incl. start {figures['wall_rate']:6.1f})"
        f"  commits {commits.calls:3d} x {figures['commit_ms']:5.1f} ms"
        f" = {100 * figures['commit_share']:4.1f} % of the time"
        f"  load {load_before:.1f} -> {figures['load'][1]:.1f}",
        flush=True,
    )
    return figures


def same_rows(a: Path, b: Path) -> bool:
    x, y = open_store(a), open_store(b)
    return x.paths.tolist() == y.paths.tolist() and np.array_equal(x.read_codes(), y.read_codes())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--jpegs", type=Path, default=None, help="folder to keep the JPEGs in")
    parser.add_argument("--backbone", default="tiny")
    parser.add_argument("--size", type=int, default=32, help="model input side (px)")
    parser.add_argument("--bits", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--task-size", type=int, default=2048)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Dask workers")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        images = images_folder(args.jpegs or work / "images", args.images)
        model = export_lsh(work, args.backbone, args.size, args.bits)
        print(
            f"{args.images} JPEGs 256 px -> {args.backbone} @ {args.size} px, {args.bits} bits, "
            f"batch {args.batch_size}, task {args.task_size} files, {os.cpu_count()} cores",
            flush=True,
        )
        plain = run("plain tbh index", images, work / "plain.zarr", model, batch_size=256)
        rates = {}
        for n in args.workers:
            store = work / f"dask{n}.zarr"
            figures = run(
                f"--dask local, {n} worker{'s' if n > 1 else ''}",
                images,
                store,
                model,
                batch_size=args.batch_size,
                dask="local",
                workers=n,
                task_size=args.task_size,
            )
            assert same_rows(store, work / "plain.zarr"), "the Dask store differs from plain"
            rates[n] = figures["rate"]
        if 1 in rates and 2 in rates:
            print(f"2 workers / 1 worker = {rates[2] / rates[1]:.2f}  (goal >= 1.6 when CPU-bound)")
        print(f"2 workers / plain    = {rates.get(2, float('nan')) / plain['rate']:.2f}")
        print("every Dask store equals the plain store row for row")


if __name__ == "__main__":
    main()
