"""What commands print: JSON, and rich tables as wide as the terminal (or as their cells, off a terminal)."""

from __future__ import annotations

import json
import math
import os
import sys
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

UNBOUNDED = 100_000
"""Columns of output that is not a terminal: rows are never folded to fit a width that does not exist."""


def console() -> Console:
    """Standard output for tables: as wide as the terminal it is, or whole rows when it is none.

    Off a terminal (a pipe, a file, a CI log) rich takes the width of whatever terminal stdin or stderr is,
    else 80 columns, and folds longer rows, ids included; there tables take the width their cells need
    instead, unless COLUMNS sets one.

    Emoji codes are not replaced: a name or message holding ":smile:" is printed as the server has it (and
    rich's table of emoji codes, about 1% of `lethe jobs list`'s start, is never loaded). Nor is rich markup
    read: every cell and title is the server's text, and a name such as "[/]" would make rich raise.
    """
    from rich.console import Console

    if os.environ.get("COLUMNS", "").isdigit() or _isatty(sys.stdout):
        return Console(emoji=False, markup=False)
    return Console(width=UNBOUNDED, height=25, emoji=False, markup=False)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def print_json(value: Any) -> None:
    """Pydantic objects, lists and dicts of them, as indented JSON on stdout."""

    def plain(v: Any) -> Any:
        if hasattr(v, "model_dump"):
            return v.model_dump(mode="json")
        if isinstance(v, list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    typer.echo(json.dumps(plain(value), indent=2))


def fmt(value: Any) -> str:
    """A cell: numbers to 4 significant decimals, None as "-", dicts and lists as compact JSON."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def table(title: str, headers: tuple[str, ...], right: tuple[str, ...] = ()) -> Table:
    """An empty table with the given columns; those named in `right` are right-aligned, long cells fold."""
    from rich.table import Table

    out = Table(title=title, title_justify="left")
    for header in headers:
        out.add_column(header, justify="right" if header in right else "left", overflow="fold")
    return out


def pairs(title: str, rows: list[tuple[str, Any]]) -> Table:
    from rich.table import Table
    from rich.text import Text

    out = Table(title=title, show_header=False, title_justify="left")
    out.add_column("field", style="bold")
    out.add_column("value", overflow="fold")
    for key, value in rows:
        out.add_row(key, Text(fmt(value)))  # Text: brackets in values are not rich markup
    return out


def duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
