"""What verifying the multi-index tables costs at their first open in a process (the codes'
checksum record plus every table file's crc32c), against one scan of the store, same store,
same run; and the part of it that reads and checksums the table files.

    python bench/mih_verify.py --rows 1000000
"""

import argparse
import subprocess
import tempfile
from pathlib import Path

import google_crc32c
import numpy as np
from timing import best_seconds  # bench/timing.py

from tbhcli.search import topk
from tbhcli.storage import mih_tables
from tbhcli.storage.mih_tables import open_tables, update_tables
from tbhcli.storage.store import open_store
from tbhcli.storage.writer import StoreLock, open_writer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    centers = rng.integers(0, 256, (args.rows // 50, 8), dtype=np.uint8)  # clustered 64-bit codes
    codes = centers[rng.integers(0, len(centers), args.rows)]
    flips = rng.random((args.rows, 64)) < 0.03
    codes = codes ^ np.packbits(flips, axis=1)
    print("load:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
        path = Path(tmp) / "codes.zarr"
        with StoreLock(path):
            writer = open_writer(
                path, bits=64, model_sha256="0" * 64, model="m.onnx", backbone="tiny",
                image_size=32, root=Path(tmp),
            )  # fmt: skip
            writer.append(codes, [f"img{i:08d}.png" for i in range(args.rows)], np.full(
                args.rows, -1, np.int32))  # fmt: skip
            update_tables(path, build=True)
        store = open_store(path)
        size = sum(f.stat().st_size for f in (path / "mih").rglob("*") if f.is_file())

        def verified_open() -> None:
            mih_tables._OPENED.clear()
            open_tables(store)

        files = [f for f in (path / "mih").rglob("*") if f.is_file() and f.name != "zarr.json"]

        def crc_files() -> None:
            for file in files:
                google_crc32c.value(file.read_bytes())

        queries = codes[:100]
        best = best_seconds(
            {
                "read + crc32c every table file": crc_files,
                "open tables, verified (first open)": verified_open,
                "open tables, verified (cached)": lambda: open_tables(store),
                "scan of the store, 100 queries": lambda: topk(store, queries, 10, method="scan"),
            },
            args.repeats,
        )
    for name, seconds in best.items():
        print(f"{name:40s} {seconds * 1e3:9.1f} ms")
    ratio = best["open tables, verified (first open)"] / best["scan of the store, 100 queries"]
    shape = f"{args.rows:,} rows x 64 bits, tables {size / 2**20:.1f} MiB"
    print(f"{shape}: verified first open / scan = {ratio:.3f}")
    print("load:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
