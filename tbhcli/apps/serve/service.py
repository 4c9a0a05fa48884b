"""What `tbh serve` answers, without HTTP: one store and one onnxruntime session, opened once.

The store's committed rows (codes, paths, labels) are held in memory (`Snapshot`): a zarr read
costs milliseconds, a search of the codes in memory a fraction of one. Every request sees the
rows committed now: `tbh index` rewrites the store's `zarr.json` at each commit, so one `stat` per
request tells whether to read the new rows; they appear without a restart.

Queries are images (bytes from a client, decoded by `imaging.images.load_image` with the upload
guards), texts (for a clip:NAME run with a text model), packed codes as hex, or rows of the
store; results are `apps.query.QueryResult`s, the same as `tbh query` returns.
"""

import io
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tbhcli.apps.gallery import inside_root, thumbnail_image
from tbhcli.apps.query import (
    QueryResult,
    check_search,
    open_searchable,
    search_codes,
)
from tbhcli.deploy.features_model import image_session
from tbhcli.deploy.runtime import describe_provider, run_codes
from tbhcli.deploy.text_runtime import open_text_model
from tbhcli.errors import TbhError
from tbhcli.imaging.images import UPLOAD_FORMATS, load_image
from tbhcli.imaging.text import check_texts
from tbhcli.search import check_threads
from tbhcli.storage.store import CodeStore, open_store

MAX_TOP = 1000  # neighbours per query: bounds the work and the size of one answer
MAX_BATCH = 1000  # queries per request
MAX_PIXELS = 50_000_000  # an uploaded image larger than this (a 50 MP photo) is refused unread
MAX_PAGE = 500  # items per page of `browse`
THUMB_SIDE = 256  # px: the page's grid pictures (a 2x screen shows 128 px boxes sharply)
VIEW_SIDE = 2048  # px: the full-size view (larger photos shrink; the original is never sent)
ORDERS = ("newest", "folder", "row")  # how `browse` sorts the collection


class NotFound(TbhError):
    """A row number that is not a committed row, or an item whose file cannot be served."""


class StoreUnavailable(TbhError):
    """The store went away or was rebuilt with another model while the server ran."""


@dataclass(frozen=True)
class Upload:
    """An image as a client sent it: its file name (only echoed back) and its bytes."""

    name: str
    data: bytes


def _stamp(path: Path) -> tuple[int, int, int]:
    """Identity of the store's `zarr.json`: each commit replaces the file (a new inode)."""
    try:
        st = os.stat(path / "zarr.json")
    except OSError as exc:
        raise StoreUnavailable(f"the code store {path} cannot be read ({exc.strerror}).") from None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _mtime(root: Path, stored: str) -> float:
    """Modification time of a stored path's file (inside `root` only); -inf when it is gone."""
    path = inside_root(root, stored)
    try:
        return path.stat().st_mtime if path is not None else -np.inf
    except OSError:
        return -np.inf


def parse_hex(code: str, bits: int) -> np.ndarray:
    """One packed code uint8 [bits / 8] from `bits / 4` hex digits (`GET /items/{row}`'s `code`)."""
    digits = bits // 4
    if not isinstance(code, str) or len(code) != digits:
        raise TbhError(f"a code is {digits} hex digits for this {bits}-bit store (got {code!r}).")
    try:
        return np.frombuffer(bytes.fromhex(code), np.uint8)
    except ValueError:
        raise TbhError(f"{code!r} is not a hex code (digits 0-9, a-f).") from None


class Snapshot:
    """The committed rows of a store, in memory: codes uint8 [N, bits/8], paths [N], labels [N]
    (about N x (bits/8 + 100) bytes), and the store they were read from."""

    def __init__(self, db: CodeStore, previous: "Snapshot | None" = None):
        start = len(previous) if previous is not None and previous.extends_to(db) else 0
        paths, labels = db.lookup(np.arange(start, len(db)))
        self.db = db
        self.codes = db.read_codes(start)
        self.paths = paths
        self.labels = labels
        if start:  # only the rows committed since `previous` were read
            self.codes = np.concatenate([previous.codes, self.codes])
            self.paths = previous.paths + paths
            self.labels = previous.labels + labels
        self._orders: dict[str, np.ndarray] = {}
        self._ordering = threading.Lock()

    def __len__(self) -> int:
        return len(self.paths)

    def extends_to(self, db: CodeStore) -> bool:
        """Whether `db` holds these rows and maybe more (else it was rewritten: read it all)."""
        n = len(self)
        return 0 < n <= len(db) and db.lookup(np.array([n - 1]))[0][0] == self.paths[-1]

    def result(self, query: str, distances: np.ndarray, ids: np.ndarray) -> QueryResult:
        paths = [self.paths[i] for i in ids]
        labels = [self.labels[i] for i in ids]
        return QueryResult(query, distances, ids, paths, labels, self.db.root)

    def order(self, how: str) -> np.ndarray:
        """Rows int64 [N] sorted for browsing, computed once per snapshot: "newest" (file
        modification time, newest first; files not found last), "folder" (by path, so a folder's
        images stay together) or "row" (as indexed)."""
        with self._ordering:
            if how not in self._orders:
                self._orders[how] = self._sort(how)
            return self._orders[how]

    def _sort(self, how: str) -> np.ndarray:
        rows = np.arange(len(self))
        if how == "folder":
            return np.array(sorted(range(len(self)), key=self.paths.__getitem__), dtype=np.int64)
        if how == "newest":  # one stat per file: about a second per 100,000 files, once
            mtimes = np.array([_mtime(self.db.root, p) for p in self.paths], dtype=np.float64)
            return np.lexsort((rows, -mtimes)).astype(np.int64)
        return rows

    def check_rows(self, rows: list[int]) -> None:
        for i in rows:
            if not 0 <= i < len(self):
                raise NotFound(f"no item {i}: the store has rows 0 to {len(self) - 1}.")


class SearchService:
    """The store, its model's session and the queries `tbh serve` answers (thread-safe)."""

    def __init__(
        self,
        store: Path | None = None,
        model: Path | None = None,
        device: str = "auto",
        threads: int | None = None,
        max_pixels: int = MAX_PIXELS,
    ):
        db, self.info = open_searchable(store, model)
        self._stamp = _stamp(db.path)
        self._snapshot = Snapshot(db)
        # as `tbh query` encodes: an images model, or a features model through its backbone
        self.session, self.provider = image_session(self.info, device)
        self.threads = check_threads(threads)
        # A clip:NAME run's text model, when exported beside the model: text queries
        self.text = open_text_model(self.info, device, threads, required=False)
        if self.text is not None:
            self.text.codes(["warm up"])  # imports the tokenizer now, not in the first request
        self.max_pixels = max_pixels
        self._reread = threading.Lock()
        # Decoding is CPU-bound: more at once only adds memory (up to ~150 MB per large image).
        self._decoding = threading.BoundedSemaphore(len(os.sched_getaffinity(0)))

    @property
    def db(self) -> CodeStore:
        """The store as last read."""
        return self._snapshot.db

    def snapshot(self) -> Snapshot:
        """The rows committed now (the new ones read when `tbh index` has committed more)."""
        stamp = _stamp(self.db.path)
        if stamp != self._stamp:
            with self._reread:
                if stamp != self._stamp:
                    db = open_store(self.db.path)
                    if db.attrs.get("model_sha256") != self.info.sha256:
                        raise StoreUnavailable(
                            f"store {db.path} was rebuilt with another model; restart tbh serve."
                        )
                    # The stamp was taken before reading: a later commit is never missed.
                    self._snapshot, self._stamp = Snapshot(db, self._snapshot), stamp
        return self._snapshot

    # ---- queries -------------------------------------------------------------------------

    def search(
        self, codes: np.ndarray, names: list[str], top: int = 10, radius: int | None = None
    ) -> list[QueryResult]:
        """Neighbours of packed codes uint8 [Q, bits / 8]; `names` [Q] label the queries."""
        return self._search(self.snapshot(), codes, names, top, radius)

    def _search(
        self, rows: Snapshot, codes: np.ndarray, names: list[str], top: int, radius: int | None
    ) -> list[QueryResult]:
        check_search(top, radius)
        if top > MAX_TOP:
            raise TbhError(f"top is at most {MAX_TOP} (got {top}).")
        if not 0 < len(codes) <= MAX_BATCH:
            raise TbhError(f"send 1 to {MAX_BATCH} queries at once (got {len(codes)}).")
        found = search_codes(rows.codes, codes, top, radius, threads=self.threads)
        return [rows.result(n, d, i) for n, (d, i) in zip(names, found, strict=True)]

    def by_images(
        self, uploads: list[Upload], top: int = 10, radius: int | None = None
    ) -> list[QueryResult]:
        """Neighbours of uploaded images, encoded by the store's model (`tbh query`'s codes)."""
        if not 0 < len(uploads) <= MAX_BATCH:
            raise TbhError(f"send 1 to {MAX_BATCH} images at once (got {len(uploads)}).")
        with self._decoding:
            pixels = np.stack([self._decode(u) for u in uploads])
            codes = run_codes(self.session, pixels)
        return self.search(codes, [u.name for u in uploads], top, radius)

    def _decode(self, upload: Upload) -> np.ndarray:
        stream = io.BytesIO(upload.data)
        stream.name = upload.name  # errors name the client's file
        return load_image(
            stream, self.info.image_size, formats=UPLOAD_FORMATS, max_pixels=self.max_pixels
        )

    def by_texts(
        self, texts: list[str], top: int = 10, radius: int | None = None
    ) -> list[QueryResult]:
        """Neighbours of descriptions, hashed by the run's text model; named by their text."""
        if self.text is None:
            raise TbhError(
                "this store's model has no text model: text queries need a run on a clip:NAME "
                "backbone, exported with `tbh export` (docs/usage.md)."
            )
        if not 0 < len(texts) <= MAX_BATCH:
            raise TbhError(f"send 1 to {MAX_BATCH} texts at once (got {len(texts)}).")
        texts = check_texts(texts)
        return self.search(self.text.codes(texts), texts, top, radius)

    def by_codes(
        self, codes: list[str], top: int = 10, radius: int | None = None
    ) -> list[QueryResult]:
        """Neighbours of hex codes; each result is named by its code."""
        if not 0 < len(codes) <= MAX_BATCH:
            raise TbhError(f"send 1 to {MAX_BATCH} codes at once (got {len(codes)}).")
        packed = np.stack([parse_hex(c, self.db.bits) for c in codes])
        return self.search(packed, list(codes), top, radius)

    def by_rows(
        self, rows: list[int], top: int = 10, radius: int | None = None
    ) -> list[QueryResult]:
        """Neighbours of store rows; each result is named by the row's path."""
        if not 0 < len(rows) <= MAX_BATCH:
            raise TbhError(f"send 1 to {MAX_BATCH} rows at once (got {len(rows)}).")
        snapshot = self.snapshot()
        snapshot.check_rows(rows)
        names = [snapshot.paths[i] for i in rows]
        return self._search(snapshot, snapshot.codes[rows], names, top, radius)

    # ---- items and the store -------------------------------------------------------------

    def browse(self, offset: int = 0, limit: int = 60, order: str = "newest") -> dict:
        """One page of the collection: {total, offset, order, items: [{row, path, label}]}."""
        if order not in ORDERS:
            raise TbhError(f"order is one of {', '.join(ORDERS)} (got {order!r}).")
        if not 0 < limit <= MAX_PAGE or offset < 0:
            raise TbhError(
                f"limit is 1 to {MAX_PAGE} and offset 0 or more (got {limit}, {offset})."
            )
        rows = self.snapshot()
        chosen = rows.order(order)[offset : offset + limit]
        items = [{"row": int(i), "path": rows.paths[i], "label": rows.labels[i]} for i in chosen]
        return {"total": len(rows), "offset": offset, "order": order, "items": items}

    def item(self, row: int) -> dict:
        """{row, path, label, code, file_bytes, width, height}: a store row; `code` is hex, as
        `POST /query` takes it; the file's size and pixels are null when it cannot be read."""
        rows = self.snapshot()
        rows.check_rows([row])
        code = rows.codes[row].tobytes().hex()
        size, width, height = None, None, None
        if (path := inside_root(rows.db.root, rows.paths[row])) is not None:
            try:
                size = path.stat().st_size
                with Image.open(path) as img:  # reads the header only
                    width, height = img.size
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
                pass
        return {
            "row": row,
            "path": rows.paths[row],
            "label": rows.labels[row],
            "code": code,
            "file_bytes": size,
            "width": width,
            "height": height,
        }

    def thumbnail(self, row: int, side: int = THUMB_SIDE) -> tuple[bytes, str]:
        """A row's image at most `side` px, read only from inside the indexed folder
        (`gallery.inside_root`): (bytes, "png" or "jpeg"). The file itself is never sent."""
        rows = self.snapshot()
        rows.check_rows([row])
        path = inside_root(rows.db.root, rows.paths[row])
        if path is None:
            raise NotFound(f"item {row}'s path is not inside the indexed folder: not served.")
        image = thumbnail_image(path, side)
        if image is None:
            raise NotFound(f"the image of item {row} cannot be read.")
        return image

    def stats(self) -> dict:
        """Rows, bits, model name and sha256, when the store last changed, where search runs."""
        rows = self.snapshot()
        return {
            "rows": len(rows),
            "bits": rows.db.bits,
            "classes": rows.db.classes,
            "model": self.info.path.name,
            "model_sha256": self.info.sha256,
            "image_size": self.info.image_size,
            "store": rows.db.path.name,
            "store_updated": rows.db.attrs.get("updated"),
            "provider": describe_provider(self.provider),
            "text_queries": self.text is not None,
        }
