"""Compare two directory trees: names (as bytes), types, content, modes, mtimes, link targets."""

from __future__ import annotations

import os
import stat


def describe_tree(root: bytes | str) -> dict[bytes, tuple[object, ...]]:
    base = os.fsencode(root)
    found: dict[bytes, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(base):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, base)
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                found[rel] = ("link", os.readlink(full))
            elif stat.S_ISDIR(st.st_mode):
                found[rel] = ("dir", stat.S_IMODE(st.st_mode), st.st_mtime_ns)
            else:
                with open(full, "rb") as handle:
                    content = handle.read()
                found[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_mtime_ns, content)
    return found
