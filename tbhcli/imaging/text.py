"""Texts -> tokens for a CLIP text tower: open_clip's built-in BPE tokenizer (its vocabulary
ships inside the package, so nothing is downloaded)."""

from functools import lru_cache

import numpy as np

from tbhcli.errors import TbhError
from tbhcli.workspace import TEXT_SUFFIX

__all__ = ["MAX_TEXT_CHARS", "TEXT_SUFFIX", "TOKENIZER", "check_texts", "tokenize"]

TOKENIZER = "open_clip:simple"  # recorded in text models; the only one tbh uses
MAX_TEXT_CHARS = 1000


def check_texts(texts: list[str]) -> list[str]:
    """Texts as queries: non-empty, at most MAX_TEXT_CHARS characters each."""
    cleaned = [t.strip() if isinstance(t, str) else t for t in texts]
    for text in cleaned:
        if not isinstance(text, str) or not text:
            raise TbhError("a text query is empty; describe the picture in a few words.")
        if len(text) > MAX_TEXT_CHARS:
            raise TbhError(f"a text query is at most {MAX_TEXT_CHARS:,} characters.")
    return cleaned


@lru_cache(maxsize=4)
def _tokenizer(context: int):
    try:
        from open_clip.tokenizer import SimpleTokenizer
    except ImportError:
        raise TbhError(
            "text queries need the open_clip package: pip install 'tbhcli[backbones]'."
        ) from None
    return SimpleTokenizer(context_length=context)  # reads its vocabulary once


def tokenize(texts: list[str], context: int) -> np.ndarray:
    """int64 [len(texts), context]: open_clip's SimpleTokenizer (long texts are cut)."""
    return _tokenizer(context)(check_texts(texts)).numpy().astype(np.int64)
