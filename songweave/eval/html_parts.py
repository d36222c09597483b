"""The pieces the library's HTML pages share: one style sheet, escaping, relative links, numbers,
tables and the atomic write of a self-contained page (inline style, no script, nothing fetched)."""

from __future__ import annotations

import html
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from songweave.runtime.atomic_files import write_text_atomic

log = logging.getLogger(__name__)

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1250px; color: #222;
       padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 1.8em; font-size: 1.25em; }
.meta { color: #555; margin-top: 0; }
table { border-collapse: collapse; margin: 0.6em 0; }
th, td { border: 1px solid #ccc; padding: 0.35em 0.6em; text-align: left; vertical-align: middle; }
th { background: #f2f2f2; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
audio { width: 185px; display: block; }
.pair-name { font-weight: 600; } .songs { color: #555; font-size: 0.85em; }
img.mask { width: 230px; display: block; } img.figure { max-width: 100%; display: block; }
.yes { color: #176117; font-weight: 600; } .no { color: #a11; font-weight: 600; }
.note { color: #555; font-size: 0.9em; max-width: 60em; }
"""


def escape(value: Any) -> str:
    return html.escape(str(value), quote=True)


def url(relative: str) -> str:
    return quote(relative, safe="/")


def number(value: Any, digits: int = 3) -> str:
    if isinstance(value, bool) or value is None or not isinstance(value, (int, float)):
        return "n/a"
    return f"{value:.{digits}f}"


def html_table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric_from: int = 1) -> str:
    """Cells are HTML already; header cells are escaped."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td class='num'>{c}</td>" if i >= numeric_from else f"<td>{c}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def audio_player(relative: str, seconds: Any = None) -> str:
    return (
        f"<audio controls preload='auto' src='{url(relative)}' "
        f"data-seconds='{escape(seconds)}'></audio>"
    )


def write_page(path: Path, title: str, body: Sequence[str]) -> Path:
    """A whole HTML document at `path`, written to a temporary name and renamed into place."""
    page = (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
        "<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
    write_text_atomic(path, page)
    log.info("wrote %s", path)
    return path
