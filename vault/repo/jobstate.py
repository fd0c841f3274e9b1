"""Small mutable job state kept in the repository: `state/<name>`, sealed JSON, replaced whole.

It lives in the repository (not on the backup host) so that `status` run anywhere sees the last
check, and a rotating read-data check continues where the last one stopped even after the
backup server is replaced. Losing it is harmless: the rotation starts over. Each save is one
generation up, remembered by this machine (vault.repo.seen): a state put back from an older
copy (an old PASS over a newer FAIL, for `status`) is ignored as if absent, never believed.
"""

from __future__ import annotations

import json
from typing import Any

from vault.errors import ObjectNotFound, VaultError
from vault.format import layout, sealing
from vault.repo.repository import Repository

CHECK = "check"  # the last `vault check`: time, outcome, and where the data rotation stopped
# Opens with the recovery key that nobody has acknowledged yet: `status` warns until one does.
BREAK_GLASS = "break-glass"
# The policy files the scheduler last ran with (name -> SHA-256): a change is an audit event.
POLICIES = "policies"
# Set once a client found that the storage does not enforce put-if-absent: from then on every
# client serialises chain appends with the append lock, even one whose own probe passed (it may
# reach the server by another path than the client that found it).
APPEND_LOCK = "append-lock"
# Snapshots this repository's own retention removed (`vault forget`): `vault copy` into it
# leaves them out rather than sending them again.
FORGOTTEN = "forgotten"
# In a source: each replica `vault copy` fills, by place: its id, the last copy that passed,
# what the replica then held, and the first failure since (what `status` reports).
REPLICAS = "replicas"


def load(repo: Repository, name: str) -> dict[str, Any] | None:
    """The state named `name`, or None when there is none (or it cannot be read)."""
    try:
        doc = json.loads(repo.open_object(sealing.Kind.STATE, layout.state(name)))
    except ObjectNotFound:
        return None
    except (VaultError, ValueError):
        return None  # damaged state only restarts a rotation; `check` reports the object
    if not isinstance(doc, dict):
        return None
    generation = doc.get("generation", 0)
    if not isinstance(generation, int) or generation < repo.seen.generation(layout.state(name)):
        return None  # rolled back to an older copy
    repo.seen.remember_generation(layout.state(name), generation)
    return doc


def save(repo: Repository, name: str, doc: dict[str, Any]) -> None:
    key = layout.state(name)
    previous = load(repo, name) or {}
    generation = max(int(previous.get("generation", 0)), repo.seen.generation(key)) + 1
    payload = json.dumps({**doc, "generation": generation}, sort_keys=True).encode()
    repo.put(key, repo.seal(sealing.Kind.STATE, name, payload))
    repo.seen.remember_generation(key, generation)


def remember_forgotten(repo: Repository, snapshot_ids: list[str]) -> None:
    """Record snapshots this repository's retention removes, so `vault copy` into it leaves
    them out (a replica keeps its own retention). Before the deletion: a record of a forget
    that was then interrupted only keeps a snapshot from being copied back."""
    if not snapshot_ids:
        return
    known = list((load(repo, FORGOTTEN) or {}).get("snapshots", []))
    known += [s for s in snapshot_ids if s not in known]
    save(repo, FORGOTTEN, {"snapshots": known})


def remember_copy(
    repo: Repository,
    place: str,
    *,
    replica_id: str,
    passed: bool,
    when: str,
    holds_up_to: str | None = None,
    destroyed_epochs: list[int] | None = None,
    tags: dict[str, list[str]] | None = None,
    mode: str | None = None,
) -> None:
    """Record a copy from this repository into the replica at `place`: when it last passed,
    the newest snapshot it then held, the destroyed epochs whose erase had reached it, and
    the tags of each snapshot it held (the next copy carries only what changed since)."""
    known = dict((load(repo, REPLICAS) or {}).get("replicas", {}))
    entry = dict(known.get(place) or {"replica_id": "", "last_copy": None, "holds_up_to": None,
                                      "failed_since": None})  # fmt: skip
    entry["replica_id"] = replica_id or entry["replica_id"]
    if passed:
        entry.update(last_copy=when, holds_up_to=holds_up_to, failed_since=None)
        if destroyed_epochs is not None:
            entry["destroyed_epochs"] = sorted(destroyed_epochs)
        if tags is not None:
            entry["tags"] = tags
        if mode is not None:  # "replica", or "independent": keys of its own, no erase to follow
            entry["mode"] = mode
    elif not entry.get("failed_since"):
        entry["failed_since"] = when
    known[place] = entry
    save(repo, REPLICAS, {"replicas": known})
