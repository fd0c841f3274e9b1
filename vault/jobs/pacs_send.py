"""The send-to-PACS job: studies restored and verified, then stored into a PACS with C-STORE.

The study's files are restored (each checked against its SHA-256) into a private staging
directory (mode 0700; `staging` chooses where, else the system's temporary directory), sent as
they were backed up (vault.pacs.store: no transcoding), and the staging copy is removed,
whatever happened. The PACS is asked for a C-ECHO first, so a wrong AE title or port is
reported before minutes go into a restore. Instances are named by their study's catalog id
and their number in the study (`3f2a…/12`), never by a UID, a patient or a path.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from vault.dicom.catalog import Study
from vault.errors import VaultError
from vault.format.snapshot import Snapshot
from vault.jobs.restore.restorer import RestoreOptions, restore
from vault.pacs.echo import NoVerification, echo
from vault.pacs.files import remove_tree
from vault.pacs.store import Instance, StoreResult, read_instance, store
from vault.policy.pacs import PacsEndpoint
from vault.progress import NoProgress, Progress
from vault.repo.repository import Repository


@dataclass
class PacsSendResult:
    studies: list[str]  # catalog ids
    instances: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (label, why): not sent
    store: StoreResult = field(default_factory=StoreResult)
    restore_seconds: float = 0.0
    restored_bytes: int = 0

    @property
    def ok(self) -> bool:
        return self.store.ok and self.instances > 0


def instance_label(study: Study, number: int) -> str:
    return f"{study.catalog_id}/{number}"


def send_studies(
    repo: Repository,
    snapshot: Snapshot,
    studies: list[Study],
    endpoint: PacsEndpoint,
    progress: Progress | None = None,
    *,
    staging: Path | None = None,
) -> PacsSendResult:
    progress = progress or NoProgress()
    with contextlib.suppress(NoVerification):  # it may store all the same: sending says
        echo(endpoint)
    result = PacsSendResult([s.catalog_id for s in studies])
    if staging is not None:
        staging.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="vault-pacs-", dir=staging))
    try:
        os.chmod(scratch, 0o700)
        started = time.monotonic()
        files = tuple(path for study in studies for path in study.files)
        restored = restore(repo, snapshot, RestoreOptions(scratch, files, verify=True), progress)
        result.restore_seconds = time.monotonic() - started
        result.restored_bytes = restored.bytes
        if restored.problems:
            raise VaultError(
                f"{len(restored.problems)} file(s) of the studies did not restore correctly; "
                "nothing was sent to the PACS"
            )
        instances: list[Instance] = []
        for study in studies:
            for number, path in enumerate(sorted(study.files), start=1):
                label = instance_label(study, number)
                staged = Path(os.fsdecode(os.fsencode(scratch) + os.fsencode(path)))
                found = read_instance(staged, label)
                if isinstance(found, str):
                    result.skipped.append((label, found))
                else:
                    instances.append(found)
        result.instances = len(instances)
        result.store = store(endpoint, instances, progress)
    finally:
        remove_tree(scratch)  # the clear-text copy goes, read-only folders and all
    return result
