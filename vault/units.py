"""Sizes and durations for people: one formatting for every page, table and report."""

from __future__ import annotations


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def human_seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1:
        # Restores of one small study take milliseconds: "0.00 s" would read as nothing.
        return f"{value * 1000:.0f} ms" if value >= 0.001 else "< 1 ms"
    if value < 10:
        return f"{value:.2f} s"
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


def counted(n: int, singular: str, plural: str | None = None) -> str:
    """'1 study', '3 studies', '0 instances'."""
    return f"{n} {singular if n == 1 else (plural or singular + 's')}"


def whole_number(text: str, max_digits: int = 18) -> int | None:
    """`text` as a whole number when it is written in the digits 0-9 only, at most
    `max_digits` of them; None otherwise. str.isdigit() alone also takes '²' and other
    Unicode digits that int() then refuses, and int() refuses more than 4,300 digits: either
    would be a traceback from a hostile object name, header, URL or setting."""
    if not text or len(text) > max_digits or not text.isascii() or not text.isdigit():
        return None
    return int(text)
