"""Durations in the config and on the command line: 90, "90s", "15m", "1h", "2d", "1w".

Kept apart from config.py so watch and schedule parse them the same way."""

from __future__ import annotations

import re
from typing import Any

_SPAN_RE = re.compile(r"(\d+)\s*([smhdw]?)")
_SCALE = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def is_span(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value >= 0
    return isinstance(value, str) and _SPAN_RE.fullmatch(value.strip()) is not None


def parse_span(value: int | str) -> float:
    """Seconds; ValueError for anything is_span refuses."""
    if not is_span(value):
        raise ValueError(f"not a duration: {value!r} (use e.g. 90, \"90s\", \"15m\", \"1h\")")
    if isinstance(value, int):
        return float(value)
    m = _SPAN_RE.fullmatch(value.strip())
    assert m is not None
    return float(int(m.group(1)) * _SCALE[m.group(2)])


def is_count(value: Any) -> bool:
    """A whole number, 0 or more (0: no limit)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
