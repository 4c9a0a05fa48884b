"""`tbh query --html`: one self-contained HTML page showing each query and its neighbours.

Thumbnails are embedded as data URIs, so the file can be mailed or opened anywhere: small images
(MNIST digits are 28 px) as lossless PNG, scaled up to the card with crisp pixels, larger ones
as 128 px JPEG. A header says which model, code length and store answered, and how fast; when
the query and a result both have a class, the result's card is green (same class) or red.

The page only shows files inside the indexed folder: a stored path that is absolute, climbs out
with `..`, or resolves through a symlink to somewhere else is refused with a placeholder, so a
tampered store cannot make the gallery embed other files. Every path and label is escaped.
"""

import base64
import html
import io
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from PIL import Image, ImageOps

from tbhcli.apps.query import QueryResult, QuerySetup
from tbhcli.imaging.images import to_rgb
from tbhcli.terminal import printable

THUMB = 128  # px: the card's picture box; images up to this size are embedded as they are

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; background: #fafafa; color: #222; }
header p { color: #555; margin: 0.2em 0 1.5em; }
section { margin-bottom: 2em; }
h2 { font-size: 1.1em; }
h2 small { font-weight: normal; color: #555; }
.grid { display: flex; flex-wrap: wrap; gap: 10px; }
figure { margin: 0; width: 140px; background: #fff; border: 2px solid #ddd; padding: 4px; }
figure.query { border-color: #2a6fdb; }
figure.relevant { border-color: #2e9e44; background: #eef8f0; }
figure.irrelevant { border-color: #d64545; background: #fbeeee; }
figure img { display: block; margin: 0 auto; width: 128px; height: 128px; object-fit: contain; }
figure img.pixels { image-rendering: pixelated; }
figcaption { font-size: 11px; overflow-wrap: anywhere; margin-top: 4px; }
.missing { height: 128px; display: flex; align-items: center; justify-content: center;
  text-align: center; color: #888; }
"""


def _text(value: object) -> str:
    """User text (a path, a label) as inert HTML: control characters escaped, then HTML-escaped."""
    return html.escape(printable(value))


def inside_root(root: Path, stored: str) -> Path | None:
    """The file that stored path `stored` names under `root`, or None when it would leave `root`.

    Refused: empty, absolute (`/etc/x`) or NUL-holding paths, any `..` part, and paths whose real
    location (symlinks followed) is outside the real `root`.
    """
    relative = PurePosixPath(stored)
    if not stored or "\x00" in stored or relative.is_absolute() or ".." in relative.parts:
        return None
    base = Path(root).resolve()
    path = (base / relative).resolve()
    return path if path.is_relative_to(base) else None


def thumbnail_image(path: Path, side: int = THUMB) -> tuple[bytes, str] | None:
    """A small image of `path`: (bytes, "png" or "jpeg"); None if the file cannot be read.

    Images up to `side` px are kept as they are, as PNG (to be shown with crisp pixels); larger
    ones shrink to `side` px on the longer side, as JPEG.
    """
    try:
        with Image.open(path) as img:
            img.draft("RGB", (side, side))  # a large JPEG decodes at a reduced scale: faster
            img = to_rgb(ImageOps.exif_transpose(img))
            small = max(img.size) <= side
            if not small:
                img.thumbnail((side, side))
            buf = io.BytesIO()
            img.save(buf, format="PNG" if small else "JPEG", **({} if small else {"quality": 80}))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
    return buf.getvalue(), "png" if small else "jpeg"


def thumbnail(path: Path) -> tuple[str, bool] | None:
    """A data URI of `path` for a card, and whether it is small (to be shown with crisp pixels);
    None if the file cannot be read."""
    image = thumbnail_image(path)
    if image is None:
        return None
    data, kind = image
    return f"data:image/{kind};base64,{base64.b64encode(data).decode('ascii')}", kind == "png"


def _figure(path: Path | None, caption: str, css: str = "") -> str:
    if path is None:
        picture = '<div class="missing">outside the indexed folder: not shown</div>'
    elif (thumb := thumbnail(path)) is None:
        picture = '<div class="missing">not readable</div>'
    else:
        uri, small = thumb
        pixels = ' class="pixels"' if small else ""
        picture = f'<img src="{uri}" alt=""{pixels}>'
    return f'<figure class="{css}">{picture}<figcaption>{caption}</figcaption></figure>'


def _relevance(query: str | None, label: str | None) -> str:
    """A result's CSS class: relevant (same class), irrelevant, or "" if either is unknown."""
    if query is None or label is None:
        return ""
    return "relevant" if label == query else "irrelevant"


def _section(result: QueryResult) -> str:
    label = f" · {_text(result.label)}" if result.label is not None else ""
    figures = [_figure(result.query, f"<b>query</b>{label}<br>{_text(result.query)}", "query")]
    rows = result.rows()
    for row in rows:
        label = f" · {_text(row['label'])}" if row["label"] is not None else ""
        caption = f"#{row['rank']} · d={row['distance']}{label}<br>{_text(row['path'])}"
        path = inside_root(result.root, row["path"])
        figures.append(_figure(path, caption, _relevance(result.label, row["label"])))
    judged = [_relevance(result.label, row["label"]) for row in rows]
    score = ""
    if rows and all(judged):
        score = f" <small>{judged.count('relevant')}/{len(rows)} of class {_text(result.label)}"
        score += "</small>"
    return (
        f"<section><h2>{_text(result.query.name)}{score}</h2>"
        f'<div class="grid">{"".join(figures)}</div></section>'
    )


def _header(setup: QuerySetup | None, queries: int) -> str:
    if setup is None:
        return "<header><h1>tbh query</h1></header>"
    facts = [
        f"model {_text(setup.model.name)} ({_text(setup.method)}, {setup.bits} bits)",
        f"store {_text(setup.store)} ({setup.rows:,} images)",
        f"{queries} {'query' if queries == 1 else 'queries'} in {setup.seconds:.2f} s",
        datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    ]
    return f"<header><h1>tbh query</h1><p>{' · '.join(facts)}</p></header>"


def write_gallery(results: list[QueryResult], out: Path) -> Path:
    """Write the gallery of `results` (thumbnails read from each result's `root`) to `out`."""
    setup = results[0].setup if results else None
    body = _header(setup, len(results)) + "".join(_section(r) for r in results)
    page = (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>tbh query</title>'
        f"<style>{_STYLE}</style></head><body>{body}</body></html>\n"
    )
    from tbhcli.atomic import write_text_atomic

    return write_text_atomic(out, page)  # (its folder is made: found missing after the search)
