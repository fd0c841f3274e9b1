"""Append-only, hash-chained records under one prefix (the audit log, drill records).

Record n is the sealed object `<prefix><n, 12 digits>`; its JSON payload carries `prev`, the
SHA-256 (hex) of record n-1's payload. Appends are put-if-absent on the next number, so two
writers cannot both extend the chain from the same record; the loser retries on the new head.
Reading with verification reports gaps (deleted records), records that fail authentication
(edited bytes) and broken links (a record replaced by another authentic one).
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
from vault.repo.repository import Repository

SEQ_DIGITS = 12
FETCHES_IN_FLIGHT = 16
_APPEND_ATTEMPTS = 8


def key_of(prefix: str, seq: int) -> str:
    return f"{prefix}{seq:0{SEQ_DIGITS}d}"


def seq_of(key: str) -> int | None:
    name = layout.id_of(key)
    return int(name) if name.isdigit() and len(name) == SEQ_DIGITS else None


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
    for _ in range(_APPEND_ATTEMPTS):
        listed = sorted((s, i) for i in repo.storage.list(prefix) if (s := seq_of(i.key)))
        if listed and sealing.is_torn(listed[-1][1].size):
            # The newest record is an empty object from a writer killed mid-upload: replace it.
            repo.storage.delete(listed[-1][1].key)
            listed.pop()
        head = listed[-1][0] if listed else 0
        prev = hashlib.sha256(load(repo, kind, key_of(prefix, head))[1]).hexdigest() if head else ""
        doc = build(head + 1, prev)
        key = key_of(prefix, head + 1)
        try:
            repo.put(key, repo.seal(kind, layout.id_of(key), _payload(doc)), if_absent=True)
            return doc
        except ObjectExists:
            continue
    raise VaultError(f"could not append to {prefix.rstrip('/')}: too many concurrent writers")


@dataclass
class ChainReport:
    records: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def read(
    repo: Repository, prefix: str, kind: sealing.Kind, noun: str, *, verify: bool = False
) -> ChainReport:
    report = ChainReport()
    listed = sorted((s, i) for i in repo.storage.list(prefix) if (s := seq_of(i.key)))
    if listed and sealing.is_torn(listed[-1][1].size):
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
