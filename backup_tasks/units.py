"""Byte counts for people: the package's one formatter."""

from __future__ import annotations

_UNITS = ("B", "KB", "MB", "GB", "TB")


def format_bytes(n: float, decimals: int = 2) -> str:
    """1024-based, as the seed prints sizes: `512 B`, `660.84 KB`, `1.80 MB` (decimals=1 for narrow columns)."""
    value = float(n)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            return f"{int(value)} B" if unit == "B" else f"{value:.{decimals}f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
