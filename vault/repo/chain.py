"""Append-only, hash-chained records under one prefix (the audit log, drill records).

Record n is the sealed object `<prefix><n, 12 digits>`; its JSON payload carries `prev`, the
SHA-256 (hex) of record n-1's payload. Appends are put-if-absent on the next number, so two
writers cannot both extend the chain from the same record; the loser retries on the new head.
Where the server does not enforce put-if-absent, appends hold the chain's append lock instead
(vault.repo.append_guard).
Reading with verification reports gaps (deleted records), records that fail authentication
(edited bytes) and broken links (a record replaced by another authentic one).

A chain alone cannot show that its newest records were cut off. So every client anchors the
head outside the bucket (vault.repo.seen): the highest record it has read or written, and the
SHA-256 of its payload. A chain that now ends before that record, or holds another record there,
was tampered with; an emptied newest record is an interrupted append only if this machine never
saw that record whole. Appends refuse to grow a chain that lost records this machine saw, so
the next append can no longer paper over a deletion.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from vault.errors import DAMAGE, IntegrityError, ObjectExists, VaultError
from vault.format import layout, sealing
from vault.repo import append_guard
from vault.repo.repository import Repository
from vault.units import whole_number

SEQ_DIGITS = 12
FETCHES_IN_FLIGHT = 16
_APPEND_ATTEMPTS = 8


def key_of(prefix: str, seq: int) -> str:
    return f"{prefix}{seq:0{SEQ_DIGITS}d}"


def seq_of(key: str) -> int | None:
    name = layout.id_of(key)
    return whole_number(name, SEQ_DIGITS) if len(name) == SEQ_DIGITS else None


def _payload(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def load(repo: Repository, kind: sealing.Kind, key: str) -> tuple[dict[str, Any], bytes]:
    payload = repo.open_object(kind, key)
    try:
        doc = json.loads(payload)
    except ValueError:
        raise IntegrityError(f"{key} is malformed", key=key) from None
    if not isinstance(doc, dict):
        raise IntegrityError(f"{key} is malformed", key=key)
    return doc, payload


def append(
    repo: Repository, prefix: str, kind: sealing.Kind, build: Callable[[int, str], dict[str, Any]]
) -> dict[str, Any]:
    """Append the record `build(seq, prev)` returns; retried on a concurrent append."""
    with append_guard.serialised(repo, prefix, operation=f"{prefix.rstrip('/')} append"):
        return _append(repo, prefix, kind, build)


def _append(
    repo: Repository, prefix: str, kind: sealing.Kind, build: Callable[[int, str], dict[str, Any]]
) -> dict[str, Any]:
    seen_seq, seen_digest = repo.seen.chain_head(prefix)
    for _ in range(_APPEND_ATTEMPTS):
        listed = sorted((s, i) for i in repo.storage.list(prefix) if (s := seq_of(i.key)))
        if listed and sealing.is_torn(listed[-1][1].size):
            if listed[-1][0] <= seen_seq:
                raise IntegrityError(
                    f"{listed[-1][1].key} was emptied after this machine saw it whole: the "
                    f"chain was tampered with, so nothing is appended (`vault audit --verify`)",
                    key=listed[-1][1].key,
                )
            # The newest record is an empty object from a writer killed mid-upload: replace it.
            repo.storage.delete(listed[-1][1].key)
            listed.pop()
        head = listed[-1][0] if listed else 0
        if head < seen_seq:
            raise IntegrityError(
                f"{prefix.rstrip('/')} ends at record {head}, but this machine has seen record "
                f"{seen_seq}: the newest records were deleted, so nothing is appended over them",
                key=prefix,
            )
        prev = ""
        if seen_seq and head >= seen_seq:
            # The record this machine saw must still be the one there: linking onto a replaced
            # one would make the replacement look like history.
            _, seen_payload = load(repo, kind, key_of(prefix, seen_seq))
            if hashlib.sha256(seen_payload).hexdigest() != seen_digest:
                raise IntegrityError(
                    f"{key_of(prefix, seen_seq)} is not the record this machine saw there "
                    "(replaced): nothing is appended over it (`vault audit --verify`)",
                    key=key_of(prefix, seen_seq),
                )
            if head == seen_seq:  # the usual case: the head is the record just checked
                prev = seen_digest
        if head and not prev:
            prev = hashlib.sha256(load(repo, kind, key_of(prefix, head))[1]).hexdigest()
        doc = build(head + 1, prev)
        key = key_of(prefix, head + 1)
        payload = _payload(doc)
        try:
            repo.put(key, repo.seal(kind, layout.id_of(key), payload), if_absent=True)
        except ObjectExists:
            continue
        repo.seen.remember_chain_head(prefix, head + 1, hashlib.sha256(payload).hexdigest())
        return doc
    raise VaultError(f"could not append to {prefix.rstrip('/')}: too many concurrent writers")


@dataclass
class ChainReport:
    records: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    # The newest record read: its number and the SHA-256 of its payload. Printed in the reports
    # so that a paper copy anchors the chain too.
    head_seq: int = 0
    head_sha256: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems


def read(
    repo: Repository, prefix: str, kind: sealing.Kind, noun: str, *, verify: bool = False
) -> ChainReport:
    report = ChainReport()
    seen_seq, seen_digest = repo.seen.chain_head(prefix)
    listed = sorted((s, i) for i in repo.storage.list(prefix) if (s := seq_of(i.key)))
    if listed and sealing.is_torn(listed[-1][1].size):
        if listed[-1][0] <= seen_seq:
            report.problems.append(_emptied(noun, listed[-1][0]))
        listed.pop()  # an interrupted final append (see `append`), not a damaged record
    keys = [(s, i.key) for s, i in listed]
    expected = 1
    prev_payload: bytes | None = None
    # Records are small and many (years of audit events): fetched in parallel, judged in order.
    with ThreadPoolExecutor(max_workers=FETCHES_IN_FLIGHT) as pool:
        loaded = pool.map(lambda item: _load_or_error(repo, kind, item[1]), keys)
        for (seq, _key), (record, error) in zip(keys, loaded, strict=True):
            if verify and seq != expected:
                missing = f"{expected}" if seq == expected + 1 else f"{expected}–{seq - 1}"
                report.problems.append(f"{noun}(s) {missing} are missing (deleted)")
                prev_payload = None
            expected = seq + 1
            if error is not None:
                report.problems.append(f"{noun} {seq} cannot be read: {error}")
                prev_payload = None
                continue
            assert record is not None
            doc, payload = record
            if verify:
                report.problems.extend(_link_problems(noun, seq, doc, prev_payload))
            report.records.append(doc)
            prev_payload = payload
            if seq == seen_seq and hashlib.sha256(payload).hexdigest() != seen_digest:
                report.problems.append(_replaced(noun, seq))
    head = keys[-1][0] if keys else 0
    if head and prev_payload is not None:
        report.head_seq, report.head_sha256 = head, hashlib.sha256(prev_payload).hexdigest()
    if head < seen_seq:
        report.problems.append(_cut(noun, head, seen_seq))
    elif head and prev_payload is not None and not report.problems:
        repo.seen.remember_chain_head(prefix, head, hashlib.sha256(prev_payload).hexdigest())
    return report


def _load_or_error(
    repo: Repository, kind: sealing.Kind, key: str
) -> tuple[tuple[dict[str, Any], bytes] | None, VaultError | None]:
    try:
        return load(repo, kind, key), None
    except DAMAGE as exc:  # anything else (an outage) the pool re-raises, in order
        return None, exc


def _link_problems(
    noun: str, seq: int, doc: dict[str, Any], prev_payload: bytes | None
) -> list[str]:
    problems = []
    if doc.get("seq") != seq:
        problems.append(f"{noun} {seq} claims to be {noun} {doc.get('seq')}")
    want = hashlib.sha256(prev_payload).hexdigest() if prev_payload is not None else None
    if seq == 1 and doc.get("prev"):
        problems.append(f"{noun} 1 links to an earlier {noun} that is gone")
    elif want is not None and doc.get("prev") != want:
        problems.append(f"{noun} {seq} does not link to {noun} {seq - 1} (edited or replaced)")
    return problems


def anchor_problems(repo: Repository, prefix: str, kind: sealing.Kind, noun: str) -> list[str]:
    """The anchor check alone, for `status`: one listing and at most one record read, however
    long the chain (the full verification is `read(..., verify=True)`)."""
    seen_seq, seen_digest = repo.seen.chain_head(prefix)
    if not seen_seq:
        return []
    listed = {s: i for i in repo.storage.list(prefix) if (s := seq_of(i.key))}
    head = max(listed, default=0)
    if head and sealing.is_torn(listed[head].size):
        if head <= seen_seq:
            return [_emptied(noun, head)]
        head -= 1
    if head < seen_seq:
        return [_cut(noun, head, seen_seq)]
    try:
        _, payload = load(repo, kind, key_of(prefix, seen_seq))
    except DAMAGE:
        return [_replaced(noun, seen_seq)]
    return [] if hashlib.sha256(payload).hexdigest() == seen_digest else [_replaced(noun, seen_seq)]


def _emptied(noun: str, seq: int) -> str:
    return (
        f"{noun} {seq} was emptied after this machine saw it whole (tampering, not an "
        "interrupted write)"
    )


def _replaced(noun: str, seq: int) -> str:
    return f"{noun} {seq} is not the one this machine saw there (replaced)"


def _cut(noun: str, head: int, seen: int) -> str:
    cut = f"{head + 1}" if head + 1 == seen else f"{head + 1}–{seen}"
    return (
        f"the {noun}s end at {head}, but this machine has seen {noun} {seen}: {noun}(s) {cut} "
        "were deleted"
    )
