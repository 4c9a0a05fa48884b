"""Which files under a photo folder are images, and why every other candidate is left out.

`tbh duplicates` acts on what it finds (a list of files to remove), so the walk is strict:
- the format comes from the content: a file is an image when its first bytes are those of a
  format Pillow reads, whatever its extension (a `.jpg` that holds text is named and skipped,
  a photo saved without an extension is found);
- symbolic links are resolved: a link to a file inside the folder is kept (marked, so it is
  never the copy kept in place of its target), a link leading outside the folder, a broken
  link and a link to a folder (never followed) are skipped and named;
- a folder or file that cannot be read is named with its reason, never skipped in silence;
- HEIC/HEIF photos are decoded by the `pillow-heif` plugin when it is installed (the `heif`
  extra); without it they are named as undecodable.
Hidden files and folders (".name", such as the `.tbh` cache) are left out without a word.
"""

import os
from dataclasses import dataclass, field
from pathlib import Path

from tbhcli.errors import TbhError
from tbhcli.imaging.images import IMAGE_EXTENSIONS

SNIFF_BYTES = 16
HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1")


def is_heif_header(head: bytes) -> bool:
    """An ISO-BMFF file of a HEIF brand (iPhone photos), not AVIF."""
    return head[4:8] == b"ftyp" and head[8:12] in HEIF_BRANDS


def is_image_header(head: bytes) -> bool:
    """Whether `head` (a file's first bytes) starts like a format Pillow decodes."""
    return (
        head.startswith((b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM"))
        or head.startswith((b"II*\x00", b"MM\x00*"))  # TIFF
        or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")
        or (head[4:8] == b"ftyp" and head[8:12] in (b"avif", b"avis"))
        or is_heif_header(head)
        or (len(head) > 2 and head[:1] == b"P" and head[1:2] in b"1234567" and head[2:3].isspace())
    )


def enable_heif() -> bool:
    """Let Pillow open HEIC/HEIF files through the optional `pillow-heif` plugin
    (`pip install 'tbhcli[heif]'`); False when it is not installed (they stay undecodable)."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return False
    register_heif_opener()
    return True


def fingerprint(file: Path) -> tuple[int, int, int, int]:
    """(size, mtime ns, inode, device) of the file a path leads to (links followed): a file
    replaced in place or edited gets another one."""
    st = os.stat(file)
    return st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev


@dataclass
class FolderScan:
    """The images under `root` (relative paths, sorted) and what was left out, with why."""

    root: Path
    files: list[Path] = field(default_factory=list)
    links: set[Path] = field(default_factory=set)  # those of `files` that are symbolic links
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)
    heif: bool = False  # the HEIF plugin is registered (a HEIC file was found)


def _skip(scan: FolderScan, path: Path, reason: str) -> None:
    scan.skipped.append((path.relative_to(scan.root).as_posix(), reason))


def _classify(scan: FolderScan, path: Path, real_root: Path) -> None:
    """Add `path` (a non-hidden directory entry that is not a folder) to `scan`."""
    link = path.is_symlink()
    if link:
        try:
            target = path.resolve(strict=True)
        except (OSError, RuntimeError):
            return _skip(scan, path, "broken symbolic link")
        if not target.is_relative_to(real_root):
            return _skip(scan, path, "symbolic link leading outside the folder")
        if target.is_dir():
            return _skip(scan, path, "symbolic link to a folder (not followed)")
    if not path.is_file():
        return  # a socket, fifo or device: not a photo
    try:
        with open(path, "rb") as handle:
            head = handle.read(SNIFF_BYTES)
    except OSError as exc:
        return _skip(scan, path, f"cannot read: {exc.strerror or exc}")
    if is_image_header(head):
        if is_heif_header(head) and not scan.heif:
            scan.heif = enable_heif()  # before the decoding workers fork
        rel = path.relative_to(scan.root)
        scan.files.append(rel)
        if link:
            scan.links.add(rel)
    elif path.suffix.lower() in IMAGE_EXTENSIONS:
        _skip(scan, path, "not an image (its content is no known image format)")


def scan_folder(root: Path) -> FolderScan:
    """Walk `root` recursively (module doc); a missing or unreadable `root` is a user error."""
    root = Path(root)
    if not root.is_dir():
        kind = "a file, not a folder" if root.exists() else "not found"
        raise TbhError(f"photo folder {root} is {kind}; pass a folder of images.")
    if not os.access(root, os.R_OK | os.X_OK):
        raise TbhError(f"photo folder {root} cannot be read (permission denied).")
    scan = FolderScan(root)
    real_root = root.resolve()

    def unreadable(error: OSError) -> None:
        _skip(scan, Path(error.filename), f"cannot read folder: {error.strerror or error}")

    for top, folders, names in os.walk(root, onerror=unreadable):
        here = Path(top)
        folders[:] = sorted(d for d in folders if not d.startswith("."))
        for name in folders:  # os.walk never enters a link to a folder: say so
            if (here / name).is_symlink():
                _skip(scan, here / name, "symbolic link to a folder (not followed)")
        for name in sorted(names):
            if not name.startswith("."):
                _classify(scan, here / name, real_root)
    scan.files.sort()
    scan.skipped.sort()
    return scan
