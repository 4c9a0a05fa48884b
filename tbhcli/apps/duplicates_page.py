"""`tbh duplicates --html`: one self-contained page, each group side by side, the kept one marked.

Thumbnails are base64 data URIs (`gallery.thumbnail`), so the page opens anywhere; every
path is HTML-escaped.
"""

import html
from pathlib import Path

from tbhcli.apps.gallery import thumbnail
from tbhcli.apps.keep import Decision, Member
from tbhcli.atomic import write_text_atomic

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; background: #fafafa; color: #222; }
section { margin-bottom: 2em; }
.grid { display: flex; flex-wrap: wrap; gap: 10px; }
figure { margin: 0; width: 160px; background: #fff; border: 1px solid #ddd; padding: 5px; }
figure.keep { border: 3px solid #1a7f37; }
figure img { display: block; margin: 0 auto; max-width: 128px; max-height: 128px; }
figcaption { font-size: 11px; overflow-wrap: anywhere; margin-top: 4px; }
.badge { font-weight: bold; color: #1a7f37; }
.missing { height: 128px; display: flex; align-items: center; justify-content: center; }
"""


def _size(m: Member) -> str:
    if m.bytes is None:
        return "missing"
    resolution = f"{m.width}×{m.height}" if m.width else "unreadable"
    return f"{resolution} · {m.bytes / 1024:.0f} KiB"


def _figure(m: Member, kept: bool) -> str:
    thumb = thumbnail(m.file)
    if thumb is None:
        picture = '<div class="missing">not readable</div>'
    else:  # small images are shown at their size with crisp pixels
        uri, small = thumb
        style = ' style="image-rendering: pixelated"' if small else ""
        picture = f'<img src="{uri}" alt=""{style}>'
    badge = '<span class="badge">keep</span> · ' if kept else ""
    caption = f"{badge}d={m.distance} · {_size(m)}<br>{html.escape(m.path)}"
    css = "keep" if kept else "copy"
    return f'<figure class="{css}">{picture}<figcaption>{caption}</figcaption></figure>'


def write_page(decisions: list[Decision], out: Path, title: str = "tbh duplicates") -> Path:
    """Write the page of `decisions` to `out`; returns `out`."""
    sections = []
    for number, decision in enumerate(decisions, 1):
        figures = "".join(_figure(m, i == decision.kept) for i, m in enumerate(decision.members))
        sections.append(
            f"<section><h2>group {number} · {len(decision.members)} images</h2>"
            f'<div class="grid">{figures}</div></section>'
        )
    body = "".join(sections) or "<p>no near duplicates found</p>"
    page = (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}: {len(decisions)} groups"
        f"</h1>{body}</body></html>\n"
    )
    out = Path(out)
    write_text_atomic(out, page)
    return out
