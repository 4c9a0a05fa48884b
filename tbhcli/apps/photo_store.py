"""`tbh duplicates PHOTOS --store S`: the folder's photo codes as a code store S.

The codes come from `apps.photo_codes` (the cache decides what is hashed again); the store is
a copy of them for `tbh duplicates --store S` and `tbh query`. It is rebuilt beside S and swapped
in (as `tbh remove` does) whenever it differs, so it never holds a stale or replaced file's
code, nor codes of an older recipe: a store that tbh duplicates wrote earlier (gray32 / dct, any
version) is rebuilt; a store of another model is refused, never mixed.
"""

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np

from tbhcli.errors import TbhError
from tbhcli.hashing.perceptual import BITS, CODE_VERSION, METHOD, SIDE
from tbhcli.storage.names import decode_name
from tbhcli.storage.store import open_store
from tbhcli.storage.writer import StoreLock, open_writer, stored_root, swap_paths


def _current(store: Path, root: Path, paths: list[str], codes: np.ndarray) -> bool:
    """Whether `store` already holds exactly these codes of this recipe (nothing to write).

    Refuses a store of another model: its codes are not photo codes.
    """
    if not (store / "zarr.json").is_file():
        return False
    table = open_store(store)
    if table.attrs.get("model") != CODE_VERSION:
        if table.attrs.get("backbone") not in ("gray32", METHOD):
            raise TbhError(
                f"store {store} holds codes of model {table.attrs.get('model')}, not photo codes; "
                "pass another --store for a photo folder."
            )
        return False  # an earlier tbh duplicates recipe: rebuilt
    if table.root.resolve() != Path(root).resolve():
        raise TbhError(
            f"store {store} holds the photo codes of {table.root}, not {root}; pass another "
            "--store (one per folder)."
        )
    same_root = table.attrs.get("root") == stored_root(store, root)
    stored = [decode_name(str(p)) for p in table.paths]
    return same_root and stored == paths and np.array_equal(table.read_codes(), codes)


def write_photo_store(store: Path, root: Path, paths: list[str], codes: np.ndarray) -> None:
    """Make `store` hold `codes` uint8 [N, BITS / 8] of `paths` under `root` (module doc)."""
    with StoreLock(store):
        if _current(store, root, paths, codes):
            return
        new, old = swap_paths(store)
        shutil.rmtree(new, ignore_errors=True)
        recipe = hashlib.sha256(CODE_VERSION.encode()).hexdigest()  # stands for a model file
        writer = open_writer(
            new, bits=BITS, model_sha256=recipe, model=CODE_VERSION, backbone=METHOD,
            image_size=SIDE, root=root,
        )  # fmt: skip
        if len(paths):
            writer.append(codes, paths, np.full(len(paths), -1, np.int32))
        # the root was recorded relative to `new`'s folder, which is `store`'s: the same
        if store.exists():
            os.rename(store, old)
        os.rename(new, store)
        shutil.rmtree(old, ignore_errors=True)
