"""Every file tbh writes appears whole or not at all: written to a temporary file beside it,
fsynced, then renamed over the target (`os.replace` is atomic within a folder).

A failure removes the temporary file and leaves any old file in place; a full disk, a read-only
folder or a missing permission is one `TbhError` line instead of a traceback and a 0-byte file.

    with atomic_output(out) as tmp:  # a Path with out's suffix (np.save, savefig, onnx.save)
        np.save(tmp, features)
    write_text_atomic(out, page)
"""

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tbhcli.errors import TbhError

NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
NO_WRITE = (errno.EROFS, errno.EACCES, errno.EPERM)


def write_error(path: Path, exc: OSError) -> TbhError | None:
    """The one-line error for a refused write of `path`, None for other OS errors."""
    if exc.errno in NO_SPACE:
        return TbhError(f"cannot write {path}: {exc.strerror}; free some space and rerun.")
    if exc.errno in NO_WRITE:
        return TbhError(
            f"cannot write {path}: {exc.strerror}; pass a writable location or fix permissions."
        )
    return None


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path (same folder, same suffix) to write `path` to; on success it
    replaces `path`, on any failure it is removed."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        error = write_error(path, exc)
        if error is None:
            raise
        raise error from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """`path.write_text(text)` (UTF-8), atomically."""
    return write_bytes_atomic(path, text.encode("utf-8"))
