"""Chunk checksums of a table: what each chunk's committed rows must be, recorded at commit.

Two layers (docs/store.md, Checksums):
- the chunk files: arrays are written with zarr's `crc32c` codec, which appends a CRC-32C of the
  encoded chunk to each file and fails the read of a file whose bytes changed (a flipped byte, a
  zeroed or truncated file): every read verifies what it reads, for the cost of the CRC;
- the commit: the table's attribute `chunk_crc32c` lists, per array and chunk, the CRC-32C of the
  chunk's *committed rows* as values (`row_bytes`), written in the same atomic zarr.json update as
  `rows_committed`. A chunk file that is whole but in the wrong place (copied over another, an
  older version put back) passes the codec and fails this list; `tbh check` compares every chunk.

The list is of row values, not file bytes, so an append killed after rewriting the last chunk
(which then holds more rows than are committed) leaves the committed rows' checksum true.
"""

import struct

import google_crc32c
import numpy as np
import zarr
from zarr.codecs import Crc32cCodec

CHECKSUMS = "chunk_crc32c"  # table attribute: {"codes": [crc per chunk], "paths": ..., ...}
CRC32C = Crc32cCodec()  # last in an array's `compressors`: it checks the bytes as stored


def has_codec(array: zarr.Array) -> bool:
    """Whether the array's chunk files carry zarr's crc32c codec (tables written since tbh 1.x)."""
    return any(isinstance(codec, Crc32cCodec) for codec in array.compressors)


def row_bytes(name: str, values: np.ndarray) -> bytes | np.ndarray:
    """The bytes a chunk checksum covers: codes and labels as stored (uint8, int32 little-endian;
    a contiguous array, which the CRC reads in place: 5x faster than a bytes copy), paths as
    UTF-8 each behind its byte length (uint32 little-endian), so no name is ambiguous."""
    if name != "paths":
        kind = "<i4" if name == "labels" else np.uint8
        return np.ascontiguousarray(values, dtype=kind).reshape(-1).view(np.uint8)
    parts = []
    for text in np.asarray(values, dtype=object).tolist():
        data = str(text).encode("utf-8", "surrogatepass")
        parts += [struct.pack("<I", len(data)), data]
    return b"".join(parts)


def extend(crc: int | None, name: str, values: np.ndarray) -> int:
    """The checksum of a chunk's rows followed by `values` (`crc` None: the chunk was empty)."""
    data = row_bytes(name, values)
    return google_crc32c.value(data) if crc is None else google_crc32c.extend(crc, data)


def appended(sums: list[int], name: str, step: int, start: int, values: np.ndarray) -> list[int]:
    """The chunk checksums of an array of `start` committed rows (chunks of `step` rows) after
    appending `values` (rows [start, start + len(values)))."""
    sums = list(sums[: -(-start // step)])
    row = start
    while row < start + len(values):
        chunk, stop = row // step, min((row // step + 1) * step, start + len(values))
        part = values[row - start : stop - start]
        if chunk < len(sums):
            sums[chunk] = extend(sums[chunk], name, part)
        else:
            sums.append(extend(None, name, part))
        row = stop
    return sums


def chunk_sum(name: str, values: np.ndarray) -> int:
    """The checksum of one chunk's committed rows `values`."""
    return extend(None, name, values)
