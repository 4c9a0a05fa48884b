"""A folder's photo codes (`hashing.perceptual`), cached by file fingerprint in `.tbh/`.

A code belongs to its photo, so the cache only saves time: it maps each relative path to the
fingerprint of the file it was computed from (size, modification time in ns, inode, device) and
the code. A file whose fingerprint changed (replaced in place, edited) is hashed again, a file
that is gone is dropped, and a cache written by another recipe (`CODE_VERSION`) or that cannot be
read is recomputed from scratch, never mixed in. The cache is written to a temporary file and
renamed, so an interrupted run leaves the old cache or the new one, never half of one.
"""

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tbhcli.errors import TbhError
from tbhcli.hashing.perceptual import BITS, CODE_VERSION, SIDE, photo_codes
from tbhcli.imaging.decode import decode_batches
from tbhcli.imaging.scan import FolderScan, fingerprint, scan_folder
from tbhcli.imaging.thumbnails import DIHEDRAL, dihedral_hash_thumbnails, hash_thumbnails
from tbhcli.storage.names import decode_name, encode_name
from tbhcli.terminal import shown

log = logging.getLogger(__name__)
CACHE_NAME = "photo-codes.npz"
MIRROR_CACHE_NAME = "photo-codes-mirror.npz"  # `--mirror`: 8 codes per image
BATCH = 256  # files decoded per batch
POOL_FROM = 64  # fewer new files than this are decoded in-process (a pool costs more to start)


@dataclass
class FolderCodes:
    """The images of a folder scan and their codes uint8 [N, V * BITS / 8] (V = `variants`:
    1, or 8 with `mirror`: the image's code, then its mirrored and rotated versions')."""

    scan: FolderScan
    paths: list[str]  # relative POSIX paths of the decoded images
    codes: np.ndarray
    hashed: int = 0  # images decoded and hashed in this run (the others came from the cache)
    variants: int = 1
    seconds: dict[str, float] = field(default_factory=dict)


def _version(variants: int) -> str:
    return CODE_VERSION if variants == 1 else f"{CODE_VERSION}+dihedral{variants}"


def _read_cache(path: Path, variants: int) -> dict[str, tuple[tuple[int, ...], np.ndarray]]:
    """path -> (fingerprint, code) of a cache of this `CODE_VERSION`; {} when there is none."""
    if not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["version"]) != _version(variants):
                log.info("%s holds codes of %s; hashing again", shown(path), shown(data["version"]))
                return {}
            names, prints, codes = data["paths"], data["fingerprints"], data["codes"]
            if len(names) != len(prints) or codes.shape != (len(names), variants * BITS // 8):
                raise ValueError("arrays of different lengths")
    except (OSError, ValueError, KeyError) as exc:
        log.warning(
            "cache %s cannot be read (%s); hashing every image again", shown(path), shown(exc)
        )
        return {}
    return {
        decode_name(str(n)): (tuple(int(v) for v in p), c)
        for n, p, c in zip(names, prints, codes, strict=True)
    }


def _write_cache(path: Path, paths: list[str], prints: list[tuple], codes: np.ndarray,
                 version: str) -> None:  # fmt: skip
    """Keep the codes for the next run; a folder that cannot be written (read-only, full) only
    costs the next run its hashing, so it is a warning, never a failed search."""
    from tbhcli.atomic import atomic_output

    try:
        with atomic_output(path) as tmp, open(tmp, "wb") as handle:
            np.savez(
                handle,
                version=np.array(version),
                paths=np.array([encode_name(p) for p in paths], dtype=str),
                fingerprints=np.array(prints, np.int64).reshape(-1, 4),
                codes=codes,
            )
    except TbhError as exc:
        log.warning("the codes are not cached (%s); the next run hashes them again", shown(exc))


def folder_codes(
    folder: Path, cache: Path | None, workers: int = 0, mirror: bool = False
) -> FolderCodes:
    """Codes of every image under `folder` (`scan_folder`), reusing `cache` where it is current.

    `cache=None` keeps nothing on disk. Undecodable files join `scan.skipped` with their reason.
    `mirror` adds the codes of each image's mirrored and rotated versions (`FolderCodes`).
    """
    began = time.perf_counter()
    variants = len(DIHEDRAL) if mirror else 1
    loader = dihedral_hash_thumbnails if mirror else hash_thumbnails
    scan = scan_folder(folder)
    known = _read_cache(cache, variants) if cache is not None else {}
    names, prints = [], []
    for rel in scan.files:
        try:
            prints.append(fingerprint(scan.root / rel))
            names.append(rel.as_posix())
        except OSError as exc:  # vanished or unreadable between the walk and now
            scan.skipped.append((rel.as_posix(), f"cannot read: {exc.strerror or exc}"))
    codes = np.zeros((len(names), variants * BITS // 8), np.uint8)
    todo = []
    for i, (name, now) in enumerate(zip(names, prints, strict=True)):
        stored = known.get(name)
        if stored is not None and stored[0] == now:
            codes[i] = stored[1]
        else:
            todo.append(i)
    scanned = time.perf_counter()
    decoded = np.ones(len(names), bool)
    files = [scan.root / names[i] for i in todo]
    pool = workers if len(todo) >= POOL_FROM else 0
    done = 0
    for batch in decode_batches(files, SIDE, BATCH, pool, loader=loader):
        rows = np.array(todo[done : done + BATCH])
        if len(batch.ok):
            thumbs = batch.pixels.reshape(len(batch.ok) * variants, -1)
            codes[rows[batch.ok]] = photo_codes(thumbs).reshape(len(batch.ok), -1)
        for position, reason in batch.errors:
            decoded[rows[position]] = False
            scan.skipped.append((names[rows[position]], f"cannot decode: {reason}"))
        done += BATCH
    keep = np.flatnonzero(decoded)
    names = [names[i] for i in keep]
    prints = [prints[i] for i in keep]
    codes = codes[keep]
    if cache is not None and (todo or len(known) != len(names)):
        _write_cache(cache, names, prints, codes, _version(variants))
    scan.skipped.sort()
    seconds = {"scan": scanned - began, "hash": time.perf_counter() - scanned}
    return FolderCodes(scan, names, codes, len(todo), variants, seconds)
