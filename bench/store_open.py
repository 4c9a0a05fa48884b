"""What validating a store on open costs: `open_store` (attributes + chunk files below
rows_committed) against zarr's plain open of the group and its three arrays, same store, same run.

    python bench/store_open.py --rows 1000000
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np
import zarr
from timing import best_of  # bench/timing.py

from tbhcli.storage.store import open_store
from tbhcli.storage.writer import StoreLock, open_writer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    rows = parser.parse_args().rows
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "codes.zarr"
        with StoreLock(path):
            writer = open_writer(
                path, bits=32, model_sha256="0" * 64, model="m.onnx", backbone="tiny",
                image_size=32, root=Path(tmp),
            )  # fmt: skip
            codes = np.random.default_rng(0).integers(0, 256, (rows, 4), dtype=np.uint8)
            names = [f"c{i % 10}/img{i:08d}.png" for i in range(rows)]
            writer.append(codes, names, np.zeros(rows, np.int32))

        def plain() -> None:
            group = zarr.open_group(path, mode="r")
            for name in ("codes", "paths", "labels"):
                group[name].shape  # noqa: B018 - opening each array is the point

        raw, ours = best_of(plain), best_of(lambda: open_store(path))
        print(
            f"{rows:,} rows: zarr open {raw * 1e3:.1f} ms, open_store (validated) "
            f"{ours * 1e3:.1f} ms, ratio {ours / raw:.2f}x, extra {1e3 * (ours - raw):.1f} ms"
        )


if __name__ == "__main__":
    main()
