"""Tiny code stores written straight with zarr by the layout contract (docs/store.md)."""

import struct
from pathlib import Path

import google_crc32c
import numpy as np
import zarr


def random_codes(rng, n: int, bits: int, density: int = 0x11) -> np.ndarray:
    """Packed codes with few set bits (mask `density`), so distances repeat and ties abound."""
    return rng.integers(0, 256, (n, bits // 8), dtype=np.uint8) & np.uint8(density)


def write_store(path: Path, codes: np.ndarray, chunk_rows: int, garbage_rows: int = 0) -> Path:
    """A code store of `codes`, plus `garbage_rows` uncommitted rows (all zero) at the end."""
    n, n_bytes = codes.shape
    total = n + garbage_rows
    group = zarr.open_group(path, mode="w", zarr_format=3)
    stored = np.concatenate([codes, np.zeros((garbage_rows, n_bytes), np.uint8)])
    group.create_array("codes", data=stored, chunks=(chunk_rows, n_bytes), compressors=None)
    paths = group.create_array("paths", shape=(total,), dtype=str, chunks=(64,))
    paths[:] = np.array([f"img/{i:05d}.jpg" for i in range(total)], dtype=object)
    group.create_array("labels", data=np.full(total, -1, np.int32), chunks=(64,))
    group.attrs.update(
        {
            "format_version": 1,
            "bits": n_bytes * 8,
            "rows_committed": n,
            "root": ".",
            "classes": [],
            "model_sha256": "0" * 64,
        }
    )
    write_checksums(group)
    return path


def write_checksums(group: zarr.Group) -> None:
    """Record `chunk_crc32c` by the layout contract: per array and chunk, the CRC-32C of the
    committed rows' values (codes as bytes, labels int32 LE, paths UTF-8 behind a uint32 LE
    length)."""
    n, sums = group.attrs["rows_committed"], {}
    for name in ("codes", "paths", "labels"):
        array, sums[name] = group[name], []
        for start in range(0, n, array.chunks[0]):
            values = array[start : min(start + array.chunks[0], n)]
            if name == "paths":
                data = b"".join(
                    struct.pack("<I", len(t.encode())) + t.encode() for t in values.tolist()
                )
            else:
                data = np.ascontiguousarray(values).astype(values.dtype.newbyteorder("<")).tobytes()
            sums[name].append(google_crc32c.value(data))
    group.attrs["chunk_crc32c"] = sums


def contents(path: Path) -> dict:
    """(table, file name) -> (code bytes, class name) of every row of a store and its query set
    (table: True for the store, False for the query set): equal stores, whatever the row order."""
    from tbhcli.storage.store import open_store

    s = open_store(path)
    out = {}
    for table in (s, s.queries):
        names, classes = table.lookup(np.arange(len(table)))
        codes = map(bytes, table.read_codes())
        out |= {(table is s, n): (c, k) for n, c, k in zip(names, codes, classes, strict=True)}
    return out
