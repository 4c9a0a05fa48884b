"""`tbh query --html`: one self-contained HTML page showing each query and its neighbours.

Thumbnails are embedded as small base64 JPEG data URIs, so the file can be mailed or opened
anywhere; every path and label is HTML-escaped.
"""

import base64
import html
import io
from pathlib import Path

from PIL import Image, ImageOps

from tbhcli.apps.query import QueryResult
from tbhcli.imaging.images import to_rgb
from tbhcli.terminal import printable


def _text(value: object) -> str:
    """User text (a path, a label) as inert HTML: control characters escaped, then HTML-escaped."""
    return html.escape(printable(value))


THUMB = 128  # px, longer side

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; background: #fafafa; color: #222; }
section { margin-bottom: 2em; }
.grid { display: flex; flex-wrap: wrap; gap: 10px; }
figure { margin: 0; width: 140px; background: #fff; border: 1px solid #ddd; padding: 5px; }
figure.query { border: 2px solid #2a6fdb; }
figure img { display: block; margin: 0 auto; max-width: 128px; max-height: 128px; }
figcaption { font-size: 11px; overflow-wrap: anywhere; margin-top: 4px; }
.missing { height: 128px; display: flex; align-items: center; justify-content: center; }
"""


def thumbnail(path: Path) -> str | None:
    """A data URI of a small JPEG of `path`, or None if it cannot be read."""
    try:
        with Image.open(path) as img:
            img = to_rgb(ImageOps.exif_transpose(img))
            img.thumbnail((THUMB, THUMB))
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=80)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(path: Path, caption: str, css: str = "") -> str:
    uri = thumbnail(path)
    picture = f'<img src="{uri}" alt="">' if uri else '<div class="missing">not readable</div>'
    return f'<figure class="{css}">{picture}<figcaption>{caption}</figcaption></figure>'


def write_gallery(results: list[QueryResult], out: Path) -> Path:
    """Write the gallery of `results` (thumbnails read from each result's `root`) to `out`."""
    sections = []
    for result in results:
        figures = [_figure(result.query, f"<b>query</b><br>{_text(result.query)}", "query")]
        for row in result.rows():
            label = f" · {_text(row['label'])}" if row["label"] is not None else ""
            caption = f"#{row['rank']} · d={row['distance']}{label}<br>{_text(row['path'])}"
            figures.append(_figure(result.root / row["path"], caption))
        sections.append(
            f"<section><h2>{_text(result.query.name)}</h2>"
            f'<div class="grid">{"".join(figures)}</div></section>'
        )
    page = (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>tbh query</title>'
        f"<style>{_STYLE}</style></head><body><h1>tbh query</h1>{''.join(sections)}</body></html>\n"
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)  # found missing only after the search
    out.write_text(page, encoding="utf-8")
    return out
