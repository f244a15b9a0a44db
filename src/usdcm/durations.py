"""Durations written on the command line: ``30s``, ``500ms``, ``2m``, ``1h30m``.

Owns the one grammar of a duration; each command keeps its own message and error type for a
value that does not parse.
"""

from __future__ import annotations

import re

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|min|h|m|s)")
_SCALE = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def seconds_in(text: str, *, bare_seconds: bool) -> float | None:
    """The seconds in ``text`` (parts with units, summed), or None when it is not a duration.

    A bare number is seconds only when ``bare_seconds`` says so.

    Examples
    --------
    >>> seconds_in("1h30m", bare_seconds=False), seconds_in("250ms", bare_seconds=False)
    (5400.0, 0.25)
    >>> seconds_in("0.5", bare_seconds=True), seconds_in("0.5", bare_seconds=False)
    (0.5, None)
    >>> seconds_in("soon", bare_seconds=True) is None, seconds_in("", bare_seconds=True) is None
    (True, True)
    """
    cleaned = text.strip().lower().replace(" ", "")
    if bare_seconds and _NUMBER.fullmatch(cleaned):
        return float(cleaned)
    parts = _PART.findall(cleaned)
    if not cleaned or "".join(number + unit for number, unit in parts) != cleaned:
        return None
    return sum(float(number) * _SCALE[unit] for number, unit in parts)
