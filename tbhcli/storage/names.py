"""File names <-> the text stored in a store's `paths` array, losslessly.

zarr stores strings as UTF-8, but a POSIX file name is bytes: `bad\\xffbytes.png` is a valid name
that no UTF-8 string spells. Python lists it with the byte as a lone surrogate (U+DCFF, PEP 383
"surrogateescape"), which UTF-8 refuses to encode. The store keeps such a byte as NUL + two hex
digits (`bad\\x00ffbytes.png`): NUL can never occur in a file name, so the escape is unambiguous,
and every UTF-8 name is stored exactly as before. A stored name with NUL cannot be opened by
mistake (the OS refuses NUL), so readers must `decode_name` it first (docs/store.md).
"""

import re

ESCAPE = "\0"
_SURROGATE = re.compile("[\udc80-\udcff]")
_ESCAPED = re.compile("\0([0-9a-f]{2})")


def encode_name(name: str) -> str:
    """The stored text of a relative path as Python lists it (`os.fsdecode`, surrogateescape)."""
    return _SURROGATE.sub(lambda m: f"{ESCAPE}{ord(m.group()) - 0xDC00:02x}", name)


def decode_name(stored: str) -> str:
    """The file name (surrogateescape str, usable with `open`/`Path`) of a stored path."""
    if ESCAPE not in stored:
        return stored
    return _ESCAPED.sub(lambda m: chr(0xDC00 + int(m.group(1), 16)), stored)
