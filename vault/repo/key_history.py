"""What still holds destroyed keys after an erase, and deleting it where the storage allows.

Re-encryption destroys the data keys of retired epochs by rewriting the keyring without them.
But storage that keeps old versions (S3 versioning, which Object Lock implies) still holds every
earlier keyring, each with those keys in it, readable by anyone who holds the master key (every
slot). Old versions of key slots likewise still wrap the master key for passphrases and recovery
keys that were removed or replaced. So after the keys are destroyed, the noncurrent versions of
`keyring` and `keys/` are deleted where the credentials and Object Lock allow, and whatever
remains is named with the reason, for the erase certificate: the erase is claimed complete only
when nothing vault can see still holds a destroyed key.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vault.errors import StorageError
from vault.format import layout
from vault.repo.repository import Repository
from vault.storage.base import VERSIONS_NONE

# Where copies can exist that no storage API shows vault.
_OUTSIDE_LOCAL = (
    "file-system snapshots, backups or mirrors of the repository directory are outside what "
    "vault can see: a copy made before the erase still holds the old keyring"
)
_OUTSIDE_BUCKET = (
    "replication of the bucket to another bucket or region, and backups of the bucket, are "
    "outside what vault can see: a copy made before the erase still holds the old keyring"
)


@dataclass
class KeyHistory:
    versioning: str  # what the storage says it keeps (vault.storage.base VERSIONS_*)
    found: int = 0  # noncurrent versions of keyring and key slots
    deleted: int = 0
    remaining: list[tuple[str, str]] = field(default_factory=list)  # (object@version, why)
    outside_view: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Nothing vault can see still holds a destroyed key."""
        return not self.remaining


def purge_key_history(repo: Repository) -> KeyHistory:
    """Delete every old version of the keyring and the key slots; the caller has just saved
    the keyring without the destroyed keys (and holds the exclusive lock)."""
    storage = repo.storage
    try:
        history = KeyHistory(storage.versioning())
    except StorageError as exc:
        history = KeyHistory("unknown")
        history.remaining.append(
            ("old versions", f"the storage would not say whether it keeps any ({exc})")
        )
    history.outside_view.append(_OUTSIDE_LOCAL if storage.local_root() else _OUTSIDE_BUCKET)
    if history.versioning in (VERSIONS_NONE, "unknown"):
        return history
    for prefix in (layout.KEYRING, layout.KEYS):
        try:
            versions = list(storage.old_versions(prefix))
        except StorageError as exc:
            history.remaining.append((f"old versions of {prefix}", f"cannot be listed ({exc})"))
            continue
        for version in versions:
            if prefix == layout.KEYRING and version.key != layout.KEYRING:
                continue  # another object whose name starts like the keyring's
            history.found += 1
            try:
                storage.delete_version(version.key, version.version_id)
            except StorageError as exc:
                why = (
                    "under Object Lock retention"
                    if repo.config.object_lock is not None
                    else f"the storage refused to delete it ({exc})"
                )
                history.remaining.append((f"{version.key}@{version.version_id}", why))
                continue
            history.deleted += 1
    return history
