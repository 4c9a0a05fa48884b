"""The one image decoding pool: files -> batches of uint8 pixels, decoded in worker processes.

`tbh features`, `tbh index` and `tbh query` all read images through `decode_batches`, so every
command decodes with the same function (`images.load_image`), the same parallelism and the same
handling of unreadable files (skipped and reported by position, never fatal).
"""

import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tbhcli.imaging.images import ImageDecodeError, load_image

DECODE_TASK = 32  # images per worker task: small, so every worker helps with every batch


@dataclass
class DecodedBatch:
    """Pixels of the decodable files of one batch, in order: uint8 [n_ok, 3, S, S] from
    `load_image`, or what another loader returns per file, stacked."""

    pixels: np.ndarray
    ok: list[int]  # positions (within the batch) of the decoded files
    errors: list[tuple[int, str]]  # (position, reason) of the files that failed


def decode_batch(files: list[Path], size: int, loader: Callable = load_image) -> DecodedBatch:
    """Decode files into one batch; runs in worker processes, so it takes and returns plain data.

    `loader(path, size)` is a top-level function (picklable) that raises `ImageDecodeError`."""
    pixels, ok, errors = [], [], []
    for i, path in enumerate(files):
        try:
            pixels.append(loader(path, size))
            ok.append(i)
        except ImageDecodeError as exc:
            errors.append((i, exc.reason))
    if not pixels:  # empty: RGB uint8 [0, 3, S, S], or [0, 0] from another loader (`_merge`)
        rgb = loader is load_image
        empty = np.zeros((0, 3, size, size), np.uint8) if rgb else np.zeros((0, 0), np.float32)
        return DecodedBatch(empty, ok, errors)
    stacked = np.stack(pixels)
    return DecodedBatch(stacked, ok, errors)


def _exit_with_parent(parent: int) -> None:
    """Worker initializer: exit as soon as the parent process is gone (killed, say).

    Without this, workers of a SIGKILLed `tbh index` would wait on their task queue forever.
    """

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _merge(parts: list[DecodedBatch], sizes: list[int]) -> DecodedBatch:
    """One batch from consecutive decoded parts of `sizes` files each (positions shifted)."""
    offsets = np.cumsum([0, *sizes[:-1]])
    decoded = [p.pixels for p in parts if len(p.ok)] or [parts[0].pixels]
    return DecodedBatch(
        np.concatenate(decoded),
        [o + i for o, p in zip(offsets, parts, strict=True) for i in p.ok],
        [(o + i, why) for o, p in zip(offsets, parts, strict=True) for i, why in p.errors],
    )


def decode_batches(
    files: list[Path], size: int, batch_size: int, workers: int, loader: Callable = load_image
) -> Iterator[DecodedBatch]:
    """Decoded batches of `batch_size` files, in order, from `workers` processes.

    Each batch is split into small tasks spread over all workers, so the first batch is ready
    quickly, and up to two batches are in flight: the next one decodes while the caller runs
    inference on the current one. The window is bounded, so memory stays flat however slow
    inference is. With `workers=0` decoding runs inline.
    """
    batches = [files[i : i + batch_size] for i in range(0, len(files), batch_size)]
    if workers == 0:
        yield from (decode_batch(batch, size, loader) for batch in batches)
        return
    step = max(1, min(DECODE_TASK, -(-batch_size // workers)))
    tasks = [
        (b, batch[i : i + step])
        for b, batch in enumerate(batches)
        for i in range(0, len(batch), step)
    ]
    window = max(workers + 1, 2 * -(-batch_size // step))
    # fork starts workers fast and needs no importable __main__; like torch's DataLoader, the
    # workers only decode images and never touch the parent's onnxruntime/CUDA state.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_exit_with_parent, initargs=(os.getpid(),)
    ) as pool:
        pending = deque()
        todo = iter(tasks)
        for b, chunk in todo:
            pending.append((b, len(chunk), pool.submit(decode_batch, chunk, size, loader)))
            if len(pending) >= window:
                break
        parts, sizes = [], []
        while pending:
            b, n, future = pending.popleft()
            parts.append(future.result())
            sizes.append(n)
            following = next(todo, None)
            if following is not None:
                pending.append(
                    (
                        following[0],
                        len(following[1]),
                        pool.submit(decode_batch, following[1], size, loader),
                    )
                )
            if not pending or pending[0][0] != b:  # the last part of batch b
                yield _merge(parts, sizes)
                parts, sizes = [], []
