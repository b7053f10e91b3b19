"""Durations as operators write them in YAML and on the command line: ``7d``, ``12h``,
``1d12h``, ``90m``, ``45s``. One parser so a hierarchy file and ``tincay ca configure`` accept
the same text and print it back the same way."""
from __future__ import annotations

import re
from datetime import timedelta

__all__ = ["format_duration", "parse_duration"]

_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_PART = re.compile(r"(\d+)([dhms])")


def parse_duration(text: str) -> timedelta:
    """``7d`` / ``1d12h`` / ``90m`` -> timedelta; ValueError naming the text otherwise.

    Units appear at most once, largest first, so ``1h1d`` and ``5m5m`` are typos, not sums.
    """
    value = text.strip().lower() if isinstance(text, str) else ""
    parts = _PART.findall(value)
    units = [unit for _, unit in parts]
    if (not parts or "".join(f"{n}{u}" for n, u in parts) != value
            or units != sorted(set(units), key=list(_UNITS).index)):
        raise ValueError(f"{text!r} is not a duration like 7d, 12h, 1d12h, 90m or 45s")
    return timedelta(seconds=sum(int(number) * _UNITS[unit] for number, unit in parts))


def format_duration(value: timedelta) -> str:
    """The canonical text (largest units first) :func:`parse_duration` reads back as ``value``."""
    seconds = int(value.total_seconds())
    if seconds <= 0:
        return "0s"
    out = []
    for unit, size in _UNITS.items():
        count, seconds = divmod(seconds, size)
        if count:
            out.append(f"{count}{unit}")
    return "".join(out)
