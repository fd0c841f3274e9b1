"""The backup-from-PACS job: the studies that live only in a PACS, into a snapshot.

The PACS is asked which studies it holds (C-FIND, from `since` on), and for each which
instances (image-level C-FIND). Instances the last PACS snapshot already holds are not fetched
again; the others are fetched with C-GET into a staging directory (mode 0700), each data set's
bytes as the PACS sent them, then backed up. The snapshot keeps what the last one held and is no
longer in staging (BackupOptions.carry_over), so every PACS snapshot holds the whole PACS as
far as vault has seen it; the staging copy is removed once the snapshot is saved.

Each study is a folder and each instance a file, named by keyed digests of their UIDs (stable
from night to night, meaningless outside the repository): `<study>/<instance>.dcm`. The
catalog knows the studies by their headers, as for files backed up from disk.
"""

from __future__ import annotations

import os
import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from vault.errors import Interrupted, UsageError
from vault.format.pack import BlobType
from vault.jobs.backup import BackupOptions, BackupResult, backup, find_parent
from vault.pacs.connect import PacsError
from vault.pacs.files import remove_tree
from vault.pacs.retrieve import PARTIAL, fetch, fetch_by_move, find_instances, find_studies
from vault.policy.pacs import PacsEndpoint
from vault.progress import NoProgress, Progress
from vault.repo.repository import Repository

PACS_TAG = "pacs"
MARKER = ".vault-staging"


@dataclass
class PacsBackupResult:
    studies: int = 0  # the PACS holds (from `since` on)
    studies_fetched: int = 0
    studies_held: int = 0  # already whole in the last PACS snapshot
    instances_fetched: int = 0
    bytes_fetched: int = 0
    problems: list[str] = field(default_factory=list)
    backup: BackupResult | None = None


def default_staging(endpoint: PacsEndpoint) -> Path:
    """Where the studies of `endpoint` are staged when --staging is not given."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return staging_dir(cache / "vault" / "pacs", endpoint)


def staging_dir(parent: Path, endpoint: PacsEndpoint) -> Path:
    """vault's own folder for `endpoint` under `parent`: only what vault puts there is backed
    up or removed, never what else `parent` holds."""
    return Path(os.path.abspath(parent)) / f"vault-pacs-{_slug(endpoint.name)}"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "pacs"


def _prepare(staging: Path) -> None:
    staging.mkdir(parents=True, exist_ok=True)
    marker = staging / MARKER
    if not marker.exists() and any(staging.iterdir()):
        raise UsageError(
            f"{staging} holds files vault did not stage: a PACS backup stages into a folder "
            "of its own, backs up all of it and empties it; give --staging another directory"
        )
    os.chmod(staging, 0o700)  # images in the clear, for the minutes they are staged
    marker.write_text("vault stages studies from a PACS here and empties this folder\n")


def _empty(staging: Path) -> None:
    """Remove what vault staged (whatever happened: it is patient data in the clear)."""
    for child in staging.iterdir():
        if child.name == MARKER:
            continue
        if child.is_dir() and not child.is_symlink():
            remove_tree(child)
        else:
            child.unlink()


def backup_from_pacs(
    repo: Repository,
    endpoint: PacsEndpoint,
    *,
    staging: Path,
    since: str | None = None,
    tags: tuple[str, ...] = (),
    time: datetime | None = None,
    host: str | None = None,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
) -> PacsBackupResult:
    """Back up what `endpoint` holds, staging it in `staging` (from staging_dir or
    default_staging: a folder only vault writes to)."""
    progress = progress or NoProgress()
    result = PacsBackupResult()
    _prepare(staging)
    # The marker and a killed run's half-written files are not part of the PACS.
    options = BackupOptions((str(staging),), (PACS_TAG, *tags), (MARKER, "*" + PARTIAL),
                            time=time, host=host, carry_over=True)  # fmt: skip
    repo.load_index()
    parent = find_parent(repo, options.host or socket.gethostname(), [str(staging)])
    catalog = repo.load_catalog(parent) if parent else None
    held = set(catalog.file_headers) if catalog else set()

    def key(uid: str) -> str:
        return repo.blob_id(b"vault pacs path\0" + uid.encode(), BlobType.DATA).hex()[:24]

    try:
        remote = find_studies(endpoint, since)
        result.studies = len(remote)
        progress.start(f"fetch from {endpoint.name}", None, unit="instance")
        try:
            for study in remote:
                if stop is not None and stop.is_set():
                    raise Interrupted("stopped while fetching from the PACS; nothing was saved")
                try:
                    _fetch_study(endpoint, study.study_uid, staging / key(study.study_uid), key,
                                 held, result, progress)  # fmt: skip
                except PacsError as exc:  # one study's trouble is not the others'
                    # Named by its folder's keyed name (as in `vault ls`), never by its UID.
                    result.problems.append(f"study {key(study.study_uid)}: {exc}")
        finally:
            progress.finish()
        result.backup = backup(repo, options, progress, stop=stop)
    finally:
        _empty(staging)
    return result


def _fetch_study(
    endpoint: PacsEndpoint,
    study_uid: str,
    folder: Path,
    key: Callable[[str], str],
    held: set[str],
    result: PacsBackupResult,
    progress: Progress,
) -> None:
    instances = find_instances(endpoint, study_uid)

    def path_of(uid: str) -> Path:
        return folder / f"{key(uid)}.dcm"

    missing = [i for i in instances if str(path_of(i.sop_instance_uid)) not in held]
    if not missing:
        result.studies_held += 1
        return
    retrieve = fetch_by_move if endpoint.retrieve == "move" else fetch
    got = retrieve(endpoint, study_uid, missing, path_of, whole=len(missing) == len(instances),
                   on_file=lambda size: progress.advance(1))  # fmt: skip
    result.studies_fetched += 1
    result.instances_fetched += got.files
    result.bytes_fetched += got.bytes
    result.problems += got.problems
    if got.files < len(missing) and not got.problems:
        result.problems.append(
            f"the PACS answered success but sent {got.files} of {len(missing)} instance(s)"
        )
