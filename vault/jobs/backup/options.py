"""What a backup is asked to do, and what it did."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime

from vault.dicom.catalog import Catalog
from vault.format.snapshot import Snapshot
from vault.policy.databases import DatabaseSource


@dataclass(frozen=True)
class BackupOptions:
    paths: tuple[str, ...]
    tags: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()
    time: datetime | None = None
    host: str | None = None
    workers: int = max(2, os.cpu_count() or 2)
    # Keep what the parent snapshot held below the sources but is no longer on disk (a
    # staging directory that holds only what is new: a backup from a PACS). Off for file
    # trees, where a file gone from disk is gone from the snapshot.
    carry_over: bool = False
    # Database dumps streamed into the snapshot; taken before the file walk unless
    # dumps_after_files (the images the database names then exist in the snapshot).
    databases: tuple[DatabaseSource, ...] = ()
    dumps_after_files: bool = False


@dataclass(frozen=True)
class Problem:
    path: str
    reason: str


@dataclass
class BackupResult:
    snapshot: Snapshot
    errors: list[Problem] = field(default_factory=list)
    unstable: list[Problem] = field(default_factory=list)
    skipped_special: list[str] = field(default_factory=list)
    packs_written: int = 0
    catalog: Catalog | None = None
    packs_adopted: int = 0  # uploaded by a killed run, indexed by this one
