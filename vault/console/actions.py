"""What the console does to a repository, each step an audit event naming the console user.

Views of patient data fail closed: when the event cannot be recorded, nothing is shown. The
work itself is the jobs' (studies search, restore, send into a PACS, drill, evidence pack);
nothing here reimplements one.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vault.console.served import Served
from vault.console.tasks import TaskProgress
from vault.dicom.catalog import Catalog, Study
from vault.errors import UsageError, VaultError
from vault.evidence import drill, drill_log
from vault.evidence.drill import DrillOptions
from vault.evidence.pack import EvidencePack, gather
from vault.format.snapshot import Snapshot
from vault.jobs.pacs_send import send_studies
from vault.jobs.restore.restorer import RestoreOptions, restore
from vault.jobs.studies import StudyFilter, StudyRow, file_sets_of
from vault.policy.pacs import PacsEndpoint
from vault.repo import audit, break_glass, lock
from vault.repo.repository import Repository

log = logging.getLogger("vault.console")
MAX_RESULTS = 200  # a search finding more asks for a narrower one (minimum necessary)
FOLDER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class AuditUnavailable(VaultError):
    """The audit event of a view could not be recorded, so the view is not shown."""


def actor(user: str) -> str:
    return f"console:{user}"


def record(repo: Repository, user: str, action: str, **fields: Any) -> audit.AuditEvent:
    try:
        return audit.record(repo, action, actor=actor(user), **fields)
    except VaultError as exc:
        raise AuditUnavailable(f"the audit event could not be recorded ({exc})") from None


def record_quietly(repo: Repository, user: str, action: str, **fields: Any) -> None:
    """For work already done (a restore finished): a failure to log does not undo it."""
    try:
        record(repo, user, action, **fields)
    except AuditUnavailable as exc:
        log.error("%s by %s: %s", action, user, exc)


@dataclass(frozen=True)
class Search:
    rows: list[StudyRow]  # newest study first
    more: int  # matches beyond MAX_RESULTS, not shown


def search_studies(served: Served, user: str, query: StudyFilter) -> Search:
    if not any(v is not None for v in vars(query).values()):
        raise UsageError("give at least one filter: patient ID, name, date or modality")
    rows, more = served.studies().search(query, MAX_RESULTS)
    with served.guard:
        record(
            served.open(),
            user,
            "studies-search" if query.identifying else "studies-list",
            result="PASS",
            catalog_ids=[r.study.catalog_id for r in rows],
            details={
                "filters": [k for k, v in vars(query).items() if v is not None],
                "console_user": user,
            },
        )
    return Search(rows, more)


def view_study(served: Served, user: str, catalog_id: str) -> StudyRow | None:
    """The study of that catalog id, its view recorded; None for anything else."""
    found = served.studies().of_catalog_id(catalog_id)
    if found is not None:
        with served.guard:
            record(
                served.open(),
                user,
                "study-view",
                result="PASS",
                catalog_ids=[catalog_id],
                details={"console_user": user},
            )
    return found


def by_catalog_id(catalog: Catalog, catalog_id: str) -> Study | None:
    """The study of that catalog id (URLs carry catalog ids only, never a study's UID)."""
    return next((s for s in catalog.studies.values() if s.catalog_id == catalog_id), None)


def study_in(repo: Repository, snapshot: Snapshot, catalog_id: str) -> tuple[Study, list[str]]:
    """The study as `snapshot` holds it, and the DICOMDIR files that come with it."""
    catalog = repo.load_catalog(snapshot)
    study = by_catalog_id(catalog, catalog_id) if catalog else None
    if catalog is None or study is None:
        raise UsageError(f"snapshot {snapshot.id[:8]} does not hold that study")
    return study, file_sets_of(catalog, [study])[0]


def new_folder(restore_root: str, name: str) -> Path:
    """A new, private folder under the console's restore root: the only place a browser user
    can restore to."""
    if not restore_root:
        raise UsageError("restores to a directory are off: console.toml sets no restore_root")
    if not FOLDER.fullmatch(name):
        raise UsageError(
            "the folder name is 1-64 letters, digits, dots, dashes or underscores, starting "
            "with a letter or digit"
        )
    root = Path(restore_root)
    root.mkdir(parents=True, exist_ok=True)
    target = root / name
    try:
        os.mkdir(target, 0o700)
    except FileExistsError:
        raise UsageError(
            f"{name} exists already under the restore folder: choose another name"
        ) from None
    return target


def restore_to_directory(
    served: Served,
    user: str,
    snapshot_id: str,
    includes: tuple[str, ...],
    catalog_ids: list[str],
    target: Path,
    progress: TaskProgress,
) -> None:
    repo = served.fresh()
    token = audit.target_token(repo, str(target))
    # A restore that fails is recorded as one, however early: the snapshot gone since the
    # page was shown, the repository locked by a prune, a file that would not verify.
    try:
        snapshot = repo.find_snapshot(snapshot_id)
        with lock.Lock(repo.storage, repo.keyring, exclusive=False, operation="restore"):
            result = restore(
                repo, snapshot, RestoreOptions(target, includes, verify=True), progress
            )
    except VaultError:
        record_quietly(
            repo,
            user,
            "restore",
            result="FAIL",
            snapshot=snapshot_id,
            catalog_ids=catalog_ids,
            target=token,
        )
        raise
    record_quietly(
        repo,
        user,
        "restore",
        result="FAIL" if result.problems else "PASS",
        snapshot=snapshot.id,
        catalog_ids=catalog_ids,
        target=token,
        details={
            "files": result.files,
            "bytes": result.bytes,
            "whole": not includes,
            "console_user": user,
        },
    )
    if result.problems:
        raise VaultError(f"{len(result.problems)} file(s) could not be restored correctly")
    progress.say(
        f"restored {result.files} file(s), {result.bytes:,} bytes, every file "
        f"verified against its SHA-256, into {target}"
    )


def send_to_pacs(
    served: Served,
    user: str,
    snapshot_id: str,
    catalog_id: str,
    endpoint: PacsEndpoint,
    progress: TaskProgress,
) -> None:
    repo = served.fresh()
    details: dict[str, Any] = {
        "endpoint": endpoint.name,
        "tls": endpoint.tls is not None,
        "console_user": user,
    }
    try:  # recorded however early it fails, as a restore into a folder is
        snapshot = repo.find_snapshot(snapshot_id)
        study, _ = study_in(repo, snapshot, catalog_id)
        with lock.Lock(repo.storage, repo.keyring, exclusive=False, operation="restore-to-pacs"):
            result = send_studies(repo, snapshot, [study], endpoint, progress)
    except VaultError:
        record_quietly(
            repo,
            user,
            "restore-to-pacs",
            result="FAIL",
            snapshot=snapshot_id,
            catalog_ids=[catalog_id],
            details=details,
        )
        raise
    details |= {
        "instances": result.instances,
        "stored": len(result.store.stored),
        "failed": len(result.store.failures),
        "skipped": len(result.skipped),
    }
    record_quietly(
        repo,
        user,
        "restore-to-pacs",
        result="PASS" if result.ok else "FAIL",
        snapshot=snapshot.id,
        catalog_ids=[catalog_id],
        details=details,
    )
    if result.instances == 0:
        raise VaultError(
            f"nothing was sent to {endpoint.name}: no instance could be sent as stored"
        )
    if not result.ok:
        raise VaultError(
            f"{len(result.store.failures)} of {result.instances} instance(s) were "
            f"not stored in {endpoint.name}"
        )
    progress.say(
        f"stored {len(result.store.stored)} instance(s) in {endpoint.name} "
        f"({endpoint.host}:{endpoint.port}), bytes as backed up"
    )


def run_sampled_drill(served: Served, user: str, progress: TaskProgress) -> str:
    repo = served.fresh()
    snapshot = repo.find_snapshot("latest")
    policy = served.drill_policy()
    options = DrillOptions(operator=actor(user))
    with lock.Lock(repo.storage, repo.keyring, exclusive=False, operation="drill"):
        found = drill.run_drill(repo, snapshot, options, policy, progress=progress)
        stored = drill_log.store_record(repo, found)
    drill_log.write_local_copy(stored, drill_log.local_copy_dir())
    record_quietly(
        repo,
        user,
        "drill",
        result=stored["result"],
        snapshot=snapshot.id,
        catalog_ids=[i["id"] for i in stored["items"] if i["kind"] == "study"],
        details={"drill_id": stored["drill_id"], "console_user": user},
    )
    progress.say(f"drill {stored['drill_id'][:8]}: {stored['result']}")
    return str(stored["drill_id"])


def evidence_pack(served: Served) -> EvidencePack:
    with served.guard:
        return gather(
            served.open(),
            served.key_policy(),
            served.drill_policy(),
            served.policy_dir,
            datetime.now(UTC),
        )


def record_download(served: Served, user: str, what: str) -> None:
    with served.guard:
        record(
            served.open(),
            user,
            "evidence-download",
            result="PASS",
            details={"what": what, "console_user": user},
        )


def record_break_glass_sign_in(served: Served, user: str) -> None:
    with served.guard:
        break_glass.record(
            served.open(),
            "console-break-glass-sign-in",
            {"console_user": user},
            actor=actor(user),
            how=f"the console's emergency-access account {user!r} signed in",
        )
