"""Durations as operators write them in YAML, on the command line and in the environment:
``7d``, ``12h``, ``1d12h``, ``90m``, ``45s``, and below the second ``500ms`` or ``100us`` (a TSA's
accuracy). One parser so a hierarchy file, ``tincay ca configure`` and the TSA settings accept
the same text and print it back the same way."""
from __future__ import annotations

import re
from datetime import timedelta

__all__ = ["format_duration", "parse_duration"]

_MICROS = {"d": 86_400_000_000, "h": 3_600_000_000, "m": 60_000_000, "s": 1_000_000,
           "ms": 1000, "us": 1}
_PART = re.compile(r"(\d+)(ms|us|[dhms])")


def parse_duration(text: str) -> timedelta:
    """``7d`` / ``1d12h`` / ``90m`` / ``500ms`` -> timedelta; ValueError naming the text
    otherwise.

    Units appear at most once, largest first, so ``1h1d`` and ``5m5m`` are typos, not sums.
    """
    value = text.strip().lower() if isinstance(text, str) else ""
    parts = _PART.findall(value)
    units = [unit for _, unit in parts]
    if (not parts or "".join(f"{n}{u}" for n, u in parts) != value
            or units != sorted(set(units), key=list(_MICROS).index)):
        raise ValueError(f"{text!r} is not a duration like 7d, 12h, 1d12h, 90m, 45s or 500ms")
    return timedelta(microseconds=sum(int(number) * _MICROS[unit] for number, unit in parts))


def format_duration(value: timedelta) -> str:
    """The canonical text (largest units first) :func:`parse_duration` reads back as ``value``."""
    micros = value // timedelta(microseconds=1)
    if micros <= 0:
        return "0s"
    out = []
    for unit, size in _MICROS.items():
        count, micros = divmod(micros, size)
        if count:
            out.append(f"{count}{unit}")
    return "".join(out)
