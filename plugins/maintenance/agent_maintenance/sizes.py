"""Sizes as PostgreSQL's ``pg_size_pretty(bigint)`` prints them, computed here
so that sums made in Python read like the server's own figures."""

from __future__ import annotations

import functools

# (unit, limit below which it is used, rounded, bits of the unit) as in
# PostgreSQL's dbsize.c (PostgreSQL 15 added PB).
_UNITS = (
    ("bytes", 10 * 1024, False, 0),
    ("kB", 20 * 1024 - 1, True, 10),
    ("MB", 20 * 1024 - 1, True, 20),
    ("GB", 20 * 1024 - 1, True, 30),
    ("TB", 20 * 1024 - 1, True, 40),
    ("PB", 20 * 1024 - 1, True, 50),
)


def _half_rounded(value: int) -> int:
    # C integer division truncates toward zero
    numerator = value + (-1 if value < 0 else 1)
    return abs(numerator) // 2 * (-1 if numerator < 0 else 1)


def _shift(value: int, bits: int) -> int:
    divisor = 1 << bits
    return abs(value) // divisor * (-1 if value < 0 else 1)


def pretty(size: int | float | None) -> str | None:
    """``pg_size_pretty`` of ``size`` (None stays None)."""
    if size is None:
        return None
    return _pretty(int(size))


@functools.lru_cache(maxsize=4096)
def _pretty(value: int) -> str:
    """Cached: a schema listing asks for eight sizes per table, and most
    tables of a large catalog share a few small sizes (0, 8 kB, 16 kB...);
    4,096 strings at most."""
    for i, (name, limit, rounded, bits) in enumerate(_UNITS):
        last = i == len(_UNITS) - 1
        if last or abs(value) < limit:
            if rounded:
                value = _half_rounded(value)
            return f"{value} {name}"
        nxt = _UNITS[i + 1]
        value = _shift(value, nxt[3] - bits - int(nxt[2]) + int(rounded))
    raise AssertionError("unreachable")  # pragma: no cover
