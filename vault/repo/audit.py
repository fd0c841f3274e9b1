"""The audit log: who restored, searched or exported which studies, and when (HIPAA 164.312(b)).

Each event is a sealed object `audit/<sequence number, 12 digits>` whose JSON names the SHA-256
of the previous event's JSON, so the events form a hash chain: an edited event fails
authentication or breaks the next link, a deleted one leaves a gap in the numbering or a broken
link. Appends use put-if-absent on the next number, so two writers cannot both extend the
chain from the same event (the loser retries on the new head). Events hold catalog ids, never
patient names, IDs or UIDs. The chain's end is anchored by every client (vault.repo.chain).

Each event names who did it: the OS user as the system reports it (not the environment), the
host, and the key slot that opened the repository — its id, kind and the name it was given at
`vault key add --name` — so a restore is attributable to a person's slot, and an open with the
recovery key (kind `recovery`) is visibly break-glass.

Restore and export targets are paths the operator typed, and a path can hold a patient's name
or a UID (/srv/restore/SMITH_JOHN). So the log keeps a keyed token of the path instead
(`target_token`): the same path always gives the same token in this repository, nobody without
its keys can test guesses against it, and `vault audit --target PATH` finds the events for a
path the auditor names.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from vault.errors import IntegrityError
from vault.format import crypto, layout, sealing
from vault.repo import chain, signing
from vault.repo.repository import Repository
from vault.whoami import os_user

TARGET_PREFIX = "path-token:"


def target_token(repo: Repository, path: str) -> str:
    """A keyed, one-way token of an absolute path for the audit log (no name or UID in it)."""
    key = crypto.subkey(repo.keyring.mac_key, b"", b"vault/v1/audit-target")
    absolute = os.path.abspath(path)
    digest = hashlib.blake2b(absolute.encode("utf-8", "surrogateescape"), key=key, digest_size=12)
    return TARGET_PREFIX + digest.hexdigest()


@dataclass(frozen=True)
class AuditEvent:
    seq: int
    time: str
    actor: str
    host: str
    action: str
    result: str  # PASS | FAIL
    snapshot: str = ""
    catalog_ids: list[str] = field(default_factory=list)
    target: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    prev: str = ""  # SHA-256 (hex) of the previous event's payload; "" for the first
    # The key slot that opened the repository ("" in events written before slots were named).
    slot: str = ""
    slot_kind: str = ""  # passphrase | keyfile | recovery (break-glass)
    slot_name: str = ""
    signature: str = ""  # Ed25519 by that slot's signing key (vault.repo.signing)

    def payload(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()


def _load(repo: Repository, key: str) -> tuple[AuditEvent, bytes]:
    doc, payload = chain.load(repo, sealing.Kind.AUDIT, key)
    try:
        return AuditEvent(**doc), payload
    except TypeError as exc:
        raise IntegrityError(f"{key} is malformed: {exc}", key=key) from None


def record(
    repo: Repository,
    action: str,
    *,
    result: str,
    snapshot: str = "",
    catalog_ids: list[str] | None = None,
    target: str = "",
    details: dict[str, Any] | None = None,
    now: datetime | None = None,
    actor: str | None = None,
) -> AuditEvent:
    """Append one event; retries on a concurrent append. Raises VaultError when it cannot.
    `actor`: who acted, when not this process's user (the console names its signed-in user)."""

    def build(seq: int, prev: str) -> dict[str, Any]:
        return signing.sign(
            repo,
            asdict(
                AuditEvent(
                    seq=seq,
                    time=(now or datetime.now(UTC)).isoformat(timespec="seconds"),
                    actor=actor or os_user(),
                    host=socket.gethostname(),
                    action=action,
                    result=result,
                    snapshot=snapshot,
                    catalog_ids=sorted(catalog_ids or []),
                    target=target,
                    details=details or {},
                    prev=prev,
                    slot=repo.slot_id,
                    slot_kind=repo.slot_kind,
                    slot_name=slot_name.result(),
                )
            ),
        )

    # The slot's name is read while the chain is listed and checked: each is a round trip.
    with ThreadPoolExecutor(max_workers=1) as pool:
        slot_name = pool.submit(
            lambda: repo.slot_info(repo.slot_id).get("name", "") if repo.slot_id else ""
        )
        return AuditEvent(**chain.append(repo, layout.AUDIT, sealing.Kind.AUDIT, build))


@dataclass
class AuditReport:
    events: list[AuditEvent] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    head_seq: int = 0  # the newest event, and the SHA-256 of its payload (chain.ChainReport)
    head_sha256: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems


def read_log(repo: Repository, *, verify: bool = False) -> AuditReport:
    """Every readable event in order; with `verify`, every break in the chain is a problem."""
    found = chain.read(repo, layout.AUDIT, sealing.Kind.AUDIT, "audit event", verify=verify)
    report = AuditReport(
        problems=list(found.problems), head_seq=found.head_seq, head_sha256=found.head_sha256
    )
    if verify:
        keys = signing.known_keys(repo, found.records)
        legacy = signing.legacy_slots(repo, found.records)
        report.problems += signing.mismatches(repo, keys)
        report.problems += signing.problems("audit event", found.records, keys, legacy)
    for doc in found.records:
        try:
            report.events.append(AuditEvent(**doc))
        except TypeError:
            report.problems.append(f"audit event {doc.get('seq')} is malformed")
    return report
