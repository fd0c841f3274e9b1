"""The repositories one console serves, each opened once (its Argon2id paid at start) and
kept open; a repository that cannot be opened shows as FAIL with the reason, and is tried
again on the next look. Page reads of one repository take turns (one Repository object is
not shared between threads); a task opens its own."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from vault.errors import VaultError
from vault.evidence.status import LEVEL_FAIL, Finding, Status, status
from vault.format.snapshot import Snapshot
from vault.jobs.studies import StudyIndex
from vault.policy.console import ConsoleRepository
from vault.policy.files import (
    DrillPolicy,
    KeyPolicy,
    load_drill_policy,
    load_key_policy,
    load_schedule_policy,
)
from vault.policy.pacs import PacsFile, load_pacs_file
from vault.repo.keys import Secret
from vault.repo.repository import Repository
from vault.repo.snapshot_cache import SnapshotCache

log = logging.getLogger("vault.console")
Opener = Callable[[ConsoleRepository], tuple[Repository, Secret]]


@dataclass
class Served:
    entry: ConsoleRepository
    opener: Opener
    repo: Repository | None = None
    secret: Secret | None = None
    error: str = ""
    guard: threading.RLock = field(default_factory=threading.RLock)
    _cache: SnapshotCache = field(default_factory=SnapshotCache)
    _studies: StudyIndex = field(default_factory=StudyIndex)

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def policy_dir(self) -> Path | None:
        return Path(self.entry.policy_dir) if self.entry.policy_dir else None

    def open(self) -> Repository:
        """The open repository (opened now if it was not); raises VaultError when it cannot."""
        with self.guard:
            if self.repo is None:
                try:
                    self.repo, self.secret = self.opener(self.entry)
                    self.error = ""
                except VaultError as exc:
                    self.error = str(exc)
                    raise
            return self.repo

    def fresh(self) -> Repository:
        """A second open of the repository, for a task that runs beside the pages."""
        return self.opener(self.entry)[0]

    def key_policy(self) -> KeyPolicy:
        return load_key_policy(self.policy_dir)

    def drill_policy(self) -> DrillPolicy:
        return load_drill_policy(self.policy_dir)

    def copy_rpo_hours(self) -> int:
        directory = self.policy_dir
        return load_schedule_policy(directory)[0].copy_rpo_hours if directory else 48

    def pacs(self) -> PacsFile | None:
        path = self.policy_dir / "pacs.toml" if self.policy_dir else None
        return load_pacs_file(path) if path and path.exists() else None

    def snapshots(self) -> list[Snapshot]:
        """Every snapshot, oldest first, each read once (vault.repo.snapshot_cache)."""
        with self.guard:
            return self._cache.snapshots(self.open())

    def studies(self) -> StudyIndex:
        """The study index, brought up to the snapshots there are now. The catalogs are read
        outside the page lock (opening sealed objects needs no shared state), so the other
        pages of this repository are served while a first index is built."""
        with self.guard:
            repo, snapshots = self.open(), self.snapshots()
        started = time.monotonic()
        added = self._studies.update(repo, snapshots)
        if added:
            log.info(
                "indexed the studies of %d snapshot(s) of %s in %.1f s",
                added,
                self.name,
                time.monotonic() - started,
            )
        return self._studies

    def warm_up(self) -> None:
        """Build the study index in the background, so the first search does not wait."""

        def build() -> None:
            try:
                self.studies()
            except VaultError as exc:  # the first search will say it
                log.warning(
                    "could not index the studies of %s: %s", self.name, exc.__class__.__name__
                )

        threading.Thread(target=build, name=f"index-{self.name}", daemon=True).start()

    def snapshot(self, snapshot_id: str) -> Snapshot | None:
        return next((s for s in self.snapshots() if s.id == snapshot_id), None)

    def status(self, now: datetime | None = None) -> Status:
        with self.guard:
            return status(
                self.open(),
                self.key_policy(),
                now or datetime.now(UTC),
                self.drill_policy(),
                self.copy_rpo_hours(),
                self.snapshots(),
            )


@dataclass(frozen=True)
class FleetRow:
    name: str
    level: str
    findings: list[Finding]
    status: Status | None


def fleet_row(served: Served, now: datetime) -> FleetRow:
    try:
        st = served.status(now)
    except VaultError as exc:
        served.repo = None  # try again next time: the storage may be back
        return FleetRow(
            served.name,
            LEVEL_FAIL,
            [Finding("repository", LEVEL_FAIL, f"cannot open it: {exc}")],
            None,
        )
    return FleetRow(served.name, st.level, st.findings, st)
