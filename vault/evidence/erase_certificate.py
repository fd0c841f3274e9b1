"""The erase certificate: what a re-encryption destroyed, where vault looked for copies of the
destroyed keys, and what it could not erase and why (NIST SP 800-88 Rev. 1, section 4.7 and
appendix G: a record of each sanitization, with its method and verification).

It states only what is true: the keys of the listed epochs are gone from the current keyring;
old versions of the keyring and key slots that the storage kept were deleted, or are named as
remaining; copies outside vault's view (file-system snapshots, bucket replicas) are named as
unchecked. Data that kept snapshots still need — including chunks that deduplication shared
with the erased data — was re-encrypted under the current epoch and stays readable by design:
an erase removes what no snapshot keeps, not what one does. No PHI: ids, counts, times.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from vault.jobs.rotate import ReencryptResult

STANDARD = "NIST SP 800-88 Rev. 1, cryptographic erase (purge)"


def certificate(
    result: ReencryptResult,
    *,
    repository_id: str,
    location: str,
    operator: str,
    when: datetime,
    replicas: tuple[str, ...] = (),
) -> dict[str, Any]:
    """`replicas`: where this repository's replicas are (`vault copy` made them). Each holds
    the destroyed keys until its next copy erases them there, so the erase is not complete
    until then; that copy leaves the replica's own certificate."""
    history = result.key_history
    remaining = [
        {"object": where, "reason": why} for where, why in (history.remaining if history else [])
    ]
    remaining += [
        {
            "object": f"replica {place}",
            "reason": "holds the destroyed keys until its next `vault copy`, which re-encrypts "
            "its packs, destroys the keys there and records the replica's own certificate",
        }
        for place in replicas
    ]
    complete = history is not None and history.complete and not replicas
    return {
        "type": "vault erase certificate",
        "certificate_id": str(uuid.uuid4()),
        "standard": STANDARD,
        "time": when.isoformat(timespec="seconds"),
        "repository_id": repository_id,
        "location": location,
        "operator": operator,
        "method": (
            "every object sealed under the epochs below was rewritten under epoch "
            f"{result.current}, then their AES-256 keys were deleted from the keyring"
        ),
        "epochs_destroyed": [
            {"id": e.id, "created": e.created, "destroyed": e.retired} for e in result.destroyed
        ],
        "rewritten": {
            "packs": result.packs_rewritten,
            "blobs": result.blobs_rewritten,
            "other_objects": result.objects_resealed,
        },
        "locations_checked": {
            "current_keyring": "holds none of the destroyed keys",
            "storage_versioning": history.versioning if history else "unknown",
            "old_versions_of_keyring_and_key_slots_found": history.found if history else 0,
            "old_versions_deleted": history.deleted if history else 0,
        },
        "not_erased": remaining,
        "outside_vault_view": list(history.outside_view) if history else [],
        "still_readable_by_design": (
            "data that kept snapshots still reference, including chunks deduplication shared "
            f"with erased data, was re-encrypted under epoch {result.current} and stays readable"
        ),
        "verdict": "complete" if complete else "incomplete",
    }
