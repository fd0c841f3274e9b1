"""Where the real-world DICOM corpus lives: pydicom's bundled test and character-set files,
and pydicom-data when installed (a test dependency). Shared by the corpus tests and
scripts/compare_deid.py."""

from __future__ import annotations

from pathlib import Path

import pydicom


def corpus_files() -> list[Path]:
    bundled = Path(pydicom.__file__).parent / "data"
    roots = [bundled / "test_files", bundled / "charset_files"]
    try:
        import data_store  # pydicom-data

        roots.append(Path(data_store.__file__).parent / "data")
    except ImportError:
        pass
    return sorted(p for root in roots for p in root.rglob("*") if p.is_file())
