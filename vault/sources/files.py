"""Backup sources: the paths named on the command line, made absolute and checked, and their
total size (for the progress bar's ETA)."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable

from vault.errors import VaultError


def total_size(sources: list[bytes], excluded: Callable[[bytes], bool]) -> int:
    total = 0
    for source in sources:
        for dirpath, dirnames, filenames in os.walk(source):
            dirnames[:] = [d for d in dirnames if not excluded(os.path.join(dirpath, d))]
            for name in filenames:
                path = os.path.join(dirpath, name)
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode) and not excluded(path):
                    total += st.st_size
        if os.path.isfile(source) and not os.path.islink(source):
            total += os.lstat(source).st_size
    return total


def sources_of(raw: Iterable[str]) -> list[bytes]:
    sources: list[bytes] = []
    for text in raw:
        path = os.fsencode(os.path.abspath(text))
        if not os.path.lexists(path):
            raise VaultError(f"source path {text} does not exist")
        if path == b"/":
            raise VaultError("backing up / as a whole is not supported; name the directories")
        sources.append(path)
    # A source inside another source is already covered by it.
    kept = [p for p in sources if not any(p != q and p.startswith(q + b"/") for q in sources)]
    return sorted(set(kept))
