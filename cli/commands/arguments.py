"""Reading the arguments that need more than typer's types: forget sets, method parameters, deltas, lists."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from cli.commands.common import usage


def forget_set(ids: str | None, ids_file: Path | None, forget_class: int | None) -> list[int] | None:
    """The ids to forget, or None when a whole class is named instead."""
    if forget_class is None:
        return read_ids(ids, ids_file)
    if ids is not None or ids_file is not None:
        usage("give --class or --ids/--ids-file, not both")
    return None


def read_ids(ids: str | None, ids_file: Path | None) -> list[int]:
    """The forget set from exactly one of --ids and --ids-file."""
    if ids is not None and ids_file is not None:
        usage("give --ids or --ids-file, not both")
    if ids is None and ids_file is None:
        usage("give the samples to forget with --ids 1,2,3 or --ids-file FILE")
    flag = "--ids" if ids is not None else "--ids-file"
    if ids_file is not None:
        try:
            ids = ids_file.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            usage(f"--ids-file: cannot read {ids_file} ({getattr(exc, 'strerror', None) or exc})")
    tokens = [t for t in re.split(r"[\s,]+", ids or "") if t]
    if not tokens:
        usage(f"{flag}: no sample ids given")
    try:
        return [int(t) for t in tokens]
    except ValueError:
        bad = next(t for t in tokens if not re.fullmatch(r"[+-]?\d+", t))
        usage(f"{flag}: {bad!r} is not a sample id (an integer)")


def parse_params(items: list[str] | None) -> dict[str, Any]:
    """--param KEY=VALUE pairs; values parse as JSON when they can (5 -> int, true -> bool), else stay text."""
    params: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            usage(f"--param {item!r}: expected KEY=VALUE, such as epochs=5")
        try:
            params[key.strip()] = json.loads(raw)
        except ValueError:
            params[key.strip()] = raw
    return params


def check_delta(delta: float) -> None:
    if not 0 <= delta < 1:
        usage(f"--delta must lie in [0, 1), got {delta:g}")


def split_names(value: str, flag: str) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    if not names:
        usage(f"{flag}: give at least one name, comma separated")
    return names
