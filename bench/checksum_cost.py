"""What chunk checksums cost a scan: top-k by scan over codes stored with zarr's crc32c codec
(every chunk read is verified) against the same codes stored without it, same chunks, same run;
plus the check's content checksum of every codes chunk (`tbh check`), against reading them.

    python bench/checksum_cost.py --rows 10000000 --bits 64 --queries 100
"""

import argparse
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import zarr
from timing import best_seconds  # bench/timing.py

from tbhcli.search import topk
from tbhcli.storage.checksums import CHECKSUMS, CRC32C, appended, chunk_sum
from tbhcli.storage.store import CodeStore, code_chunk_rows


def codes_array(path: Path, codes: np.ndarray, checksums: bool) -> zarr.Array:
    """The codes as tbh stores them (uncompressed, row chunks), with or without the crc32c, in a
    group whose attributes a `CodeStore` reads (with the checksum list when `checksums`)."""
    group = zarr.open_group(path, mode="w", zarr_format=3)
    array = group.create_array(
        "codes",
        shape=codes.shape,
        chunks=(code_chunk_rows(codes.shape[1] * 8), codes.shape[1]),
        dtype="uint8",
        compressors=[CRC32C] if checksums else None,
        fill_value=0,
    )
    array[:] = codes
    attrs = {"rows_committed": len(codes), "bits": codes.shape[1] * 8}
    if checksums:
        attrs[CHECKSUMS] = {"codes": appended([], "codes", array.chunks[0], 0, codes)}
    group.attrs.update(attrs)
    return array


def fresh_store(array: zarr.Array) -> CodeStore:
    """A newly opened store view: it checks each chunk against the list once, as a new
    `tbh query` process does."""
    group = zarr.open_group(Path(array.store.root), mode="r")
    return CodeStore(group, Path(array.store.root), Path(array.store.root))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--bits", type=int, default=64)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (args.rows, args.bits // 8), dtype=np.uint8)
    queries = codes[rng.choice(args.rows, args.queries, replace=False)]
    print("load:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    print(f"cpus: {len(os.sched_getaffinity(0))}")
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
        plain = codes_array(Path(tmp) / "plain.zarr", codes, checksums=False)
        checked = codes_array(Path(tmp) / "checked.zarr", codes, checksums=True)
        step = plain.chunks[0]

        def content_sums() -> None:
            for start in range(0, args.rows, step):
                chunk_sum("codes", checked[start : start + step])

        best = best_seconds(
            {
                "scan (no checksums)": lambda: topk(plain, queries, 10, method="scan"),
                "scan (crc32c verified)": lambda: topk(checked, queries, 10, method="scan"),
                "scan of a store (no checksums)": lambda: topk(
                    fresh_store(plain), queries, 10, method="scan"
                ),
                "scan of a store (crc32c + checksum list)": lambda: topk(
                    fresh_store(checked), queries, 10, method="scan"
                ),
                "read every codes chunk (no checksums)": lambda: plain[:],
                "read every codes chunk (crc32c verified)": lambda: checked[:],
                "read + content checksums (tbh check)": content_sums,
            },
            args.repeats,
        )
    for name, seconds in best.items():
        print(f"{name:40s} {seconds * 1e3:9.1f} ms")
    ratio = (
        best["scan of a store (crc32c + checksum list)"] / best["scan of a store (no checksums)"]
    )
    print("load:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    shape = f"{args.rows:,} rows x {args.bits} bits, {args.queries} queries"
    print(f"{shape}: scan of a checksummed store / of a plain one = {ratio:.3f}")


if __name__ == "__main__":
    main()
