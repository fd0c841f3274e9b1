"""The repository's index objects as a whole: read them raw, and replace them by one.

Used by the jobs that rewrite packs (re-encryption, prune): they write their new packs and
indexes first, then `consolidate` writes one index naming every pack to keep and only then
deletes the old index objects — at every moment, every kept blob is named by a durable index.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from vault import ids
from vault.format import index, layout, sealing
from vault.format.index import Index, PackInfo
from vault.format.pack import PackEntry
from vault.repo.repository import Repository

RawIndex = list[tuple[str, PackInfo, list[PackEntry]]]


def load_raw(repo: Repository) -> RawIndex:
    """(index object key, pack, entries) for every pack every index object names."""
    found: RawIndex = []
    for key in repo.index_objects():
        if key in repo.torn_objects:
            continue
        payload = repo.open_object(sealing.Kind.INDEX, key)
        for pack, entries in index.decode(payload, name=key):
            found.append((key, pack, entries))
    return found


def index_of(raw: RawIndex, keep: Callable[[PackInfo], bool]) -> Index:
    built = Index()
    for _, pack, entries in raw:
        if keep(pack):
            built.load_pack(pack, entries)
    built.freeze()
    return built


def locked_index_objects(repo: Repository, now: datetime) -> set[str]:
    """Index objects still under Object Lock retention: they cannot be removed yet, so the
    packs they name must stay too."""
    locked = set()
    for key in repo.index_objects():
        until = repo.storage.stat(key).retain_until
        if until is not None and until > now:
            locked.add(key)
    return locked


def consolidate(
    repo: Repository, keep: Callable[[PackInfo], bool], *, locked: set[str] | None = None
) -> int:
    """Write one index naming every pack `keep` accepts, then delete every other index object
    except `locked` ones (Object Lock). Returns how many were replaced. Callers hold an
    exclusive lock."""
    raw = load_raw(repo)
    old_keys = sorted(
        {key for key, _, _ in raw} | {k for k in repo.torn_objects if k.startswith(layout.INDEX)}
    )
    merged: dict[str, tuple[PackInfo, dict[bytes, PackEntry]]] = {}
    for _, pack, entries in raw:
        if not keep(pack):
            continue
        slot = merged.setdefault(pack.id, (pack, {}))
        for entry in entries:
            slot[1][entry.id] = entry
    index_id = ids.new_id()
    batch = [(pack, list(entries.values())) for pack, entries in merged.values()]
    repo.put(
        layout.index(index_id),
        repo.seal(sealing.Kind.INDEX, index_id, index.encode(batch)),
        if_absent=True,
    )
    for key in old_keys:
        if key not in (locked or set()):
            repo.storage.delete(key)
    repo.forget_index()
    return len(old_keys)
