"""Signatures on audit events and drill records: which key slot wrote each one.

Every key slot made since signing exists holds its own Ed25519 key, the private half wrapped
under that slot's own KEK (vault.repo.keys), so only whoever holds that slot's passphrase, key
file or recovery key can sign as it — sealing alone cannot say that, because every slot opens
the same master key. A record names the slot that opened the repository and carries a
signature over its canonical JSON (everything but the signature). Verification looks the
slot's public key up in the slot objects, or, for slots removed since, in the audit event
that introduced the slot (init, key add, key passwd, master rotation record it): a record
naming a slot whose key is known must carry a valid signature by that key.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from typing import Any

from vault.format import crypto
from vault.repo.repository import Repository

# Audit actions whose details introduce a slot: {"slot": id, "signing_public": b64}.
INTRODUCING = ("init", "key-add", "key-passwd", "key-rotate-master")


def _body(doc: dict[str, Any]) -> bytes:
    unsigned = {k: v for k, v in doc.items() if k != "signature"}
    return json.dumps(unsigned, sort_keys=True, separators=(",", ":")).encode()


def sign(repo: Repository, doc: dict[str, Any]) -> dict[str, Any]:
    """`doc` with its signature by the slot that opened the repository (unchanged for slots
    made before signing existed: they have no signing key)."""
    if not repo.signing_key:
        return doc
    signature = crypto.sign(repo.signing_key, _body(doc))
    return {**doc, "signature": base64.b64encode(signature).decode()}


def public_key(repo: Repository, slot_id: str) -> str:
    """The current slot's public signing key, base64 ("" when it has none)."""
    for slot in repo.slots():
        if slot.id == slot_id and slot.signing_public:
            return base64.b64encode(slot.signing_public).decode()
    return ""


def known_keys(repo: Repository, audit_events: Iterable[dict[str, Any]]) -> dict[str, bytes]:
    """Slot id -> public signing key, as the hash-chained event that introduced the slot
    recorded it. That record is authoritative: the key in the clear slot object can be swapped
    by whoever writes to the storage (`mismatches` reports such a slot); the slot's own key is
    used only for a slot no event introduced."""
    keys: dict[str, bytes] = {}
    for event in audit_events:
        details = event.get("details") or {}
        if event.get("action") not in INTRODUCING:
            continue
        for slot_field, key_field in (
            ("slot", "signing_public"),
            ("recovery_slot", "recovery_signing_public"),  # init and master rotation make one
        ):
            try:
                if details.get(key_field):
                    keys.setdefault(str(details[slot_field]), base64.b64decode(details[key_field]))
            except (KeyError, ValueError):
                continue
    # A slot no event introduced (its init event could not be written, or a program made the
    # repository through the API): its own clear key is all there is. Weaker — whoever writes
    # to the storage could swap it — but refusing its genuine events would be worse.
    for slot in repo.slots():
        if slot.signing_public:
            keys.setdefault(slot.id, slot.signing_public)
    return keys


def introduce(repo: Repository, slot_id: str) -> dict[str, str]:
    """The details an introducing event records for a new slot: its id and public key."""
    return {"slot": slot_id, "signing_public": public_key(repo, slot_id)}


def introduce_recovery(repo: Repository) -> dict[str, str]:
    """The same for the recovery slot that init and master rotation make."""
    recovery = [s for s in repo.slots() if s.kind == "recovery"]
    if len(recovery) != 1:
        return {}
    slot = recovery[0]
    return {
        "recovery_slot": slot.id,
        "recovery_signing_public": base64.b64encode(slot.signing_public).decode(),
    }


def legacy_slots(repo: Repository, records: Iterable[dict[str, Any]]) -> set[str]:
    """Slots that sign nothing because they were made before signing existed: current slots
    without a signing key, and those naming events before the first signed one."""
    legacy = {slot.id for slot in repo.slots() if not slot.signing_public}
    for doc in records:
        if doc.get("signature"):
            break
        legacy.add(str(doc.get("slot") or ""))
    return legacy


def mismatches(repo: Repository, keys: dict[str, bytes]) -> list[str]:
    """Slots whose clear public key is not the one their introducing event recorded."""
    return [
        f"keys/{slot.id} carries a signing key other than the one its audit event recorded "
        "(replaced)"
        for slot in repo.slots()
        if slot.id in keys and slot.signing_public and slot.signing_public != keys[slot.id]
    ]


def problems(
    noun: str, records: Iterable[dict[str, Any]], keys: dict[str, bytes], legacy: set[str]
) -> list[str]:
    """A record naming a slot whose key is known must be signed by it; once signing has begun,
    a record naming no known slot (or none at all) was not written by vault."""
    found = []
    signing_began = False
    for doc in records:
        slot, seq = str(doc.get("slot") or ""), doc.get("seq")
        signature = str(doc.get("signature") or "")
        signing_began = signing_began or bool(signature)
        public = keys.get(slot)
        if public is None:
            if signing_began and slot not in legacy:
                found.append(f"{noun} {seq} names no key slot this repository knows (forged?)")
            continue
        if not signature:
            found.append(f"{noun} {seq} names slot {slot[:8]} but is not signed by it (forged?)")
            continue
        try:
            raw = base64.b64decode(signature, validate=True)
        except ValueError:
            raw = b""
        if not crypto.verify_signature(public, _body(doc), raw):
            found.append(f"{noun} {seq} is not signed by the slot it names ({slot[:8]}): forged")
    return found
