"""The audit log: who restored, searched or exported which studies, and when (HIPAA 164.312(b)).

Each event is a sealed object `audit/<sequence number, 12 digits>` whose JSON names the SHA-256
of the previous event's JSON, so the events form a hash chain: an edited event fails
authentication or breaks the next link, a deleted one leaves a gap in the numbering or a broken
link. Appends use put-if-absent on the next number, so two writers cannot both extend the
chain from the same event (the loser retries on the new head). Events hold catalog ids, never
patient names, IDs or UIDs. (The newest event can only be shown deleted against an earlier
listing or an external copy: `vault audit --json` output kept elsewhere serves as that anchor.)
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import socket
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from vault import layout, sealing
from vault.errors import IntegrityError, ObjectExists, VaultError
from vault.repository import Repository

_SEQ_DIGITS = 12
_APPEND_ATTEMPTS = 8


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

    def payload(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()


def _key(seq: int) -> str:
    return f"{layout.AUDIT}{seq:0{_SEQ_DIGITS}d}"


def _seq_of(key: str) -> int | None:
    name = layout.id_of(key)
    return int(name) if name.isdigit() and len(name) == _SEQ_DIGITS else None


def _actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def _load(repo: Repository, key: str) -> tuple[AuditEvent, bytes]:
    payload = repo.open_object(sealing.Kind.AUDIT, key)
    try:
        return AuditEvent(**json.loads(payload)), payload
    except (TypeError, ValueError) as exc:
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
) -> AuditEvent:
    """Append one event; retries on a concurrent append. Raises VaultError when it cannot."""
    for _ in range(_APPEND_ATTEMPTS):
        seqs = sorted(s for s in (_seq_of(i.key) for i in repo.storage.list(layout.AUDIT)) if s)
        head = seqs[-1] if seqs else 0
        prev = hashlib.sha256(_load(repo, _key(head))[1]).hexdigest() if head else ""
        event = AuditEvent(
            seq=head + 1,
            time=(now or datetime.now(UTC)).isoformat(timespec="seconds"),
            actor=_actor(),
            host=socket.gethostname(),
            action=action,
            result=result,
            snapshot=snapshot,
            catalog_ids=sorted(catalog_ids or []),
            target=target,
            details=details or {},
            prev=prev,
        )
        key = _key(event.seq)
        blob = repo.seal(sealing.Kind.AUDIT, layout.id_of(key), event.payload())
        try:
            repo.put(key, blob, if_absent=True)
            return event
        except ObjectExists:
            continue  # another process appended first: chain onto its event
    raise VaultError("could not append to the audit log: too many concurrent writers")


@dataclass
class AuditReport:
    events: list[AuditEvent] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def read_log(repo: Repository, *, verify: bool = False) -> AuditReport:
    """Every readable event in order; with `verify`, every break in the chain is a problem."""
    report = AuditReport()
    keys = sorted((s, i.key) for i in repo.storage.list(layout.AUDIT) if (s := _seq_of(i.key)))
    expected_seq = 1
    prev_payload: bytes | None = None
    for seq, key in keys:
        if verify and seq != expected_seq:
            missing = f"{expected_seq}" if seq == expected_seq + 1 else f"{expected_seq}–{seq - 1}"
            report.problems.append(f"audit event(s) {missing} are missing (deleted)")
            prev_payload = None
        expected_seq = seq + 1
        try:
            event, payload = _load(repo, key)
        except VaultError as exc:
            report.problems.append(f"audit event {seq} cannot be read: {exc}")
            prev_payload = None
            continue
        if verify:
            if event.seq != seq:
                report.problems.append(f"audit event {seq} claims to be event {event.seq}")
            want = hashlib.sha256(prev_payload).hexdigest() if prev_payload is not None else None
            if seq == 1 and event.prev:
                report.problems.append("audit event 1 links to an earlier event that is gone")
            elif want is not None and event.prev != want:
                report.problems.append(
                    f"audit event {seq} does not link to event {seq - 1} (edited or replaced)"
                )
        report.events.append(event)
        prev_payload = payload
    return report
