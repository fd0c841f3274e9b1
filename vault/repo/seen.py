"""What this machine has seen of each repository, kept outside the repository.

A repository's mutable objects (the keyring above all) can be put back to an older copy by
whoever can write to the storage: a keyring from before `key rotate` would make every later
backup seal under the epoch the rotation retired. The repository alone cannot prove it is not
an old copy of itself, so each client remembers the highest generation it has seen of each
mutable object, per repository id, and refuses an older one. It also remembers the head of each
hash chain (audit log, drill records) it has seen, so records deleted or replaced at the end of
a chain are tampering it can name, and the key slot it last opened each repository location
with, so the next open tries that slot's KDF first.

The record is `$VAULT_STATE_DIR/<repository id>.json` (default `$XDG_STATE_HOME/vault`, else
`~/.local/state/vault`), mode 0600 in a 0700 directory. It holds no secret: generations and a
slot id. A machine that cannot write it still works, without the rollback memory.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def state_dir() -> Path:
    explicit = os.environ.get("VAULT_STATE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "vault"


class LastSlots:
    """The slot each repository location was last opened with (`slots.json` beside the
    records): read before the repository is open, when its id is not known yet, so the first
    KDF tried is the one that opened it last time."""

    def __init__(self) -> None:
        self.path = state_dir() / "slots.json"
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            doc = {}
        self._doc: dict[str, Any] = doc if isinstance(doc, dict) else {}

    def get(self, location: str) -> str:
        value = self._doc.get(location, "")
        return value if isinstance(value, str) else ""

    def remember(self, location: str, slot_id: str) -> None:
        if slot_id and self.get(location) != slot_id:
            self._doc[location] = slot_id
            _write_json(self.path, self._doc)


class Seen:
    """The record for one repository (by its config id)."""

    def __init__(self, repository_id: str) -> None:
        self.path = state_dir() / f"{repository_id}.json"
        self._doc = self._load()

    def _load(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return doc if isinstance(doc, dict) else {}

    def generation(self, name: str) -> int:
        value = self._doc.get("generations", {}).get(name, 0)
        return value if isinstance(value, int) else 0

    def remember_generation(self, name: str, generation: int) -> None:
        if generation > self.generation(name):
            self._doc.setdefault("generations", {})[name] = generation
            self._save()

    def chain_head(self, prefix: str) -> tuple[int, str]:
        """(sequence number, SHA-256 of its payload) of the newest record of the chain under
        `prefix` that this machine has seen; (0, "") when none."""
        value = self._doc.get("chains", {}).get(prefix)
        if isinstance(value, list) and len(value) == 2 and isinstance(value[0], int):
            return value[0], str(value[1])
        return 0, ""

    def remember_chain_head(self, prefix: str, seq: int, digest: str) -> None:
        if seq > self.chain_head(prefix)[0]:
            self._doc.setdefault("chains", {})[prefix] = [seq, digest]
            self._save()

    def _save(self) -> None:
        # Another vault process on this machine may have remembered more since this one read
        # the file: merge, keeping the highest of everything, so no process lowers an anchor.
        merged = self._load()
        for table in ("generations", "chains"):
            mine, theirs = self._doc.get(table, {}), merged.setdefault(table, {})
            for name, value in mine.items():
                if _rank(value) > _rank(theirs.get(name)):
                    theirs[name] = value
        self._doc = merged
        _write_json(self.path, self._doc)


def _rank(value: Any) -> int:
    """How far along a remembered value is: a generation, or a chain head's sequence number."""
    if isinstance(value, int):
        return value
    if isinstance(value, list) and value and isinstance(value[0], int):
        return value[0]
    return -1


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    """Atomically, 0600 in a 0700 directory; best effort: a read-only home loses the memory,
    never the job."""
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".seen-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(doc, handle, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
