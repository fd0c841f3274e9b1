"""Whether a storage location holds a repository, or may receive a new one: the checks made
before a passphrase is asked for (opening) and before anything is written (init)."""

from __future__ import annotations

from vault.errors import ObjectNotFound, RepositoryNotFound, UsageError, VaultError
from vault.format import layout
from vault.format.config import LOCK_MODES, ObjectLockPolicy
from vault.storage import Storage


def holds_repository(storage: Storage) -> bool:
    # A GET, not a HEAD: an S3 error to a HEAD has no body, so "wrong credentials" and
    # "access denied" would look the same.
    try:
        storage.get(layout.VERSION)
    except ObjectNotFound:
        return False
    return True


def not_found(storage: Storage) -> RepositoryNotFound:
    """The error for a location without a `version` object, saying which case it is."""
    try:
        storage.stat(layout.CONFIG)
    except VaultError:
        return RepositoryNotFound(
            f"no vault repository at {storage.location()} (run `vault init` to create one)"
        )
    return RepositoryNotFound(
        f"{storage.location()} holds a repository's config but no `version` object (deleted, "
        f"or an interrupted init); it is the one line {layout.VERSION_TEXT.decode().strip()!r}"
    )


def ensure_exists(storage: Storage) -> bytes:
    """The version object's bytes; RepositoryNotFound, saying which case, without one."""
    try:
        return storage.get(layout.VERSION)
    except ObjectNotFound:
        raise not_found(storage) from None


def check_new_location(storage: Storage, object_lock: ObjectLockPolicy | None) -> None:
    """Refuse, before anything is written, a location where init must not create one."""
    if object_lock is not None:
        if object_lock.mode not in LOCK_MODES or object_lock.days < 1:
            raise UsageError("object lock needs a mode (governance or compliance) and days >= 1")
        if not storage.supports_object_lock():
            raise UsageError(
                f"{storage.location()} cannot hold locked objects: Object Lock needs an S3 "
                "bucket created with Object Lock enabled"
            )
    if holds_repository(storage):
        raise UsageError(f"a repository already exists at {storage.location()}")
    if any(True for _ in storage.list("")):
        raise UsageError(
            f"{storage.location()} is not empty but holds no complete repository "
            "(an interrupted init?); choose an empty location or empty this one"
        )
