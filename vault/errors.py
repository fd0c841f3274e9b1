"""The one exception tree of vault; each class carries its process exit code.

    VaultError (1)                      a job could not go on
    ├── UsageError (2)                  bad arguments, bad policy or configuration
    ├── PartialBackup (3)               snapshot written, but some source files were not saved
    ├── RepositoryNotFound (10)         no repository at the given location
    ├── RepositoryLocked (11)           another process holds a conflicting lock
    ├── WrongKey (12)                   passphrase / key file / recovery key opens no slot
    ├── StorageError (1)                the backend failed (I/O, network, permissions)
    │   ├── ObjectNotFound (1)          a named object does not exist
    │   └── ObjectExists (1)            a put-if-absent found the object already there
    └── IntegrityError (1)              an object failed authentication or is malformed

Problems that `check` finds are findings in a report, not exceptions. Messages never contain
secrets, passphrases or anything read from a patient file: only object names and local paths.
`cli.main` is the only place that turns these into exit codes.
"""

from __future__ import annotations


class VaultError(Exception):
    """Base of every error vault raises on purpose."""

    exit_code = 1


class UsageError(VaultError):
    exit_code = 2


class PartialBackup(VaultError):
    exit_code = 3


class RepositoryNotFound(VaultError):
    exit_code = 10


class RepositoryLocked(VaultError):
    exit_code = 11


class WrongKey(VaultError):
    exit_code = 12


class Interrupted(VaultError):
    """Stopped on request (SIGTERM/SIGINT) at a safe point; what was saved so far is kept."""

    exit_code = 130


class StorageError(VaultError):
    exit_code = 1


class ObjectNotFound(StorageError):
    def __init__(self, key: str) -> None:
        super().__init__(f"object {key} does not exist")
        self.key = key


class ObjectExists(StorageError):
    def __init__(self, key: str) -> None:
        super().__init__(f"object {key} already exists")
        self.key = key


class IntegrityError(VaultError):
    """An object is corrupt, truncated, swapped or sealed under an unknown key."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


# What a job that judges the repository (check, the repairs) records as a finding: an object
# that is missing or fails authentication. Anything else — a storage outage after every retry,
# an interrupt — propagates and stops the job: a network outage must never look like, or be
# repaired as, lost data.
DAMAGE: tuple[type[VaultError], ...] = (IntegrityError, ObjectNotFound)
