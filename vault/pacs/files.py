"""Removing staged DICOM files for sure: they are patient data in the clear."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def remove_tree(path: Path) -> None:
    """Remove `path` and everything below it, read-only folders included (a restore gives
    folders their recorded modes, 0555 among them, which would stop a plain rmtree when not
    root). Raises OSError when something cannot be removed."""
    for root, dirs, _ in os.walk(path):
        os.chmod(root, 0o700)
        for name in dirs:
            full = os.path.join(root, name)
            if not os.path.islink(full):
                os.chmod(full, 0o700)
    shutil.rmtree(path)
