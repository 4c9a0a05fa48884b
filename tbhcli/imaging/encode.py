"""Decoded batches through a model, positions kept: the one decode -> encode loop.

`tbh features` (a backbone), `tbh index`, `tbh query` and the Dask index workers (an ONNX model)
all walk a list of files batch by batch, run a model on the pixels of the files that decoded and
report the others; `encode_batches` is that walk, so each file keeps its position in the list
whichever batch it lands in and however many files before it failed.
"""

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from tbhcli.imaging.decode import DecodedBatch, decode_batches


@dataclass
class EncodedBatch:
    """What a model made of one decoded batch, with positions in the whole list of files."""

    outputs: np.ndarray | None  # model(pixels) [n_ok, ...] of the decodable files; None if none
    ok: list[int]  # positions (in the list of files) of the encoded files, in order
    errors: list[tuple[int, str]]  # (position in the list of files, reason) of the failed ones
    end: int  # the position after the batch's last file: files done so far


def encode_batches(
    batches: Iterable[DecodedBatch], model: Callable[[np.ndarray], np.ndarray]
) -> Iterator[EncodedBatch]:
    """`model` (uint8 pixels [B, 3, S, S] -> [B, ...]) on each batch that has decodable files.

    >>> import numpy as np
    >>> from tbhcli.imaging.decode import DecodedBatch
    >>> pixels = np.zeros((1, 3, 2, 2), np.uint8)
    >>> batches = [DecodedBatch(pixels, [1], [(0, "truncated")]), DecodedBatch(pixels, [0], [])]
    >>> [(b.ok, b.errors, b.end) for b in encode_batches(batches, lambda p: p.sum(axis=(1, 2, 3)))]
    [([1], [(0, 'truncated')], 2), ([2], [], 3)]
    """
    start = 0
    for batch in batches:
        outputs = model(batch.pixels) if batch.ok else None
        end = start + len(batch.ok) + len(batch.errors)
        ok = [start + i for i in batch.ok]
        yield EncodedBatch(outputs, ok, [(start + i, why) for i, why in batch.errors], end)
        start = end


def encode_files(
    files: list, model: Callable[[np.ndarray], np.ndarray], image_size: int, batch_size: int,
    workers: int = 0,
) -> Iterator[EncodedBatch]:  # fmt: skip
    """`encode_batches` over `files` decoded by the pool of `decode_batches` (`workers`
    processes a batch ahead; 0 decodes inline)."""
    return encode_batches(decode_batches(files, image_size, batch_size, workers), model)
