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
    """Slot id -> public signing key, from the slots and the events that introduced slots."""
    keys = {slot.id: slot.signing_public for slot in repo.slots() if slot.signing_public}
    for event in audit_events:
        details = event.get("details") or {}
        if event.get("action") in INTRODUCING and details.get("signing_public"):
            try:
                keys.setdefault(str(details["slot"]), base64.b64decode(details["signing_public"]))
            except (KeyError, ValueError):
                continue
    return keys


def problems(noun: str, records: Iterable[dict[str, Any]], keys: dict[str, bytes]) -> list[str]:
    """A record naming a slot whose key is known must be signed by it."""
    found = []
    for doc in records:
        slot, seq = str(doc.get("slot") or ""), doc.get("seq")
        public = keys.get(slot)
        if not slot or public is None:
            continue  # written before signing existed, by a slot that never had a key
        signature = str(doc.get("signature") or "")
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
