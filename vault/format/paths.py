"""Paths inside snapshots: safe names, display form, and include matching. Pure functions."""

from __future__ import annotations

import os


def is_safe_name(name: bytes) -> bool:
    """A tree entry name that stays inside its directory when joined to a path."""
    return bool(name) and name not in (b".", b"..") and b"/" not in name and b"\0" not in name


def display(path: bytes) -> str:
    """A path for messages and listings; undecodable bytes shown as \\xNN escapes."""
    return path.decode("utf-8", "backslashreplace")


def to_bytes(text: str) -> bytes:
    return os.fsencode(text)


def normalize(text: str) -> bytes:
    """An include path as given by the user, as an absolute snapshot path without a trailing /."""
    raw = os.fsencode(text)
    parts = [p for p in raw.split(b"/") if p and p != b"."]
    return b"/" + b"/".join(parts)


def selected(path: bytes, includes: list[bytes]) -> bool:
    """True when `path` is an included path, inside one, or an ancestor of one."""
    if not includes:
        return True
    for inc in includes:
        if inc == b"/" or path == inc or path.startswith(inc + b"/") or inc.startswith(path + b"/"):
            return True
    return False


def inside_include(path: bytes, includes: list[bytes]) -> bool:
    """True when `path` is an included path or inside one (not a mere ancestor)."""
    if not includes:
        return True
    return any(inc == b"/" or path == inc or path.startswith(inc + b"/") for inc in includes)


class IncludeMatcher:
    """`selected` and `inside_include` for many includes at once (a study is hundreds of
    files): set lookups over a path's ancestors instead of comparing every include."""

    def __init__(self, includes: list[bytes]) -> None:
        self.includes = set(includes)
        self.everything = not includes or b"/" in self.includes
        self.ancestors: set[bytes] = set()
        for inc in includes:
            parent = inc
            while parent not in (b"", b"/"):
                parent = parent.rsplit(b"/", 1)[0]
                self.ancestors.add(parent or b"/")

    def inside(self, path: bytes) -> bool:
        """An included path or something inside one."""
        if self.everything:
            return True
        probe = path
        while probe:
            if probe in self.includes:
                return True
            probe = probe.rsplit(b"/", 1)[0]
        return False

    def selected(self, path: bytes) -> bool:
        """Included, inside an include, or an ancestor directory of one."""
        return self.inside(path) or path in self.ancestors
