"""The breach-assessment fact sheet of a key compromise, as a page a privacy officer can read.

HIPAA's breach rule (45 CFR 164.402) asks the practice to assess whether protected health
information was compromised; encryption whose key was not exposed is a safe harbour, and here
the key was reported exposed. This sheet lists what that key sealed, who and what could reach
it, and what vault did and when. It draws no conclusion: whether this is a reportable breach is
the practice's decision, with its privacy officer and counsel. No patient information: studies
are named by catalog id only.
"""

from __future__ import annotations

from typing import Any

from vault.evidence.pack import EvidencePack, Section
from vault.jobs.compromise import ExposureFacts
from vault.units import human_bytes

INTRO = (
    "Facts for the breach risk assessment of 45 CFR 164.402 after a key was reported "
    "compromised: what the key sealed, where it was held, and what was done. It draws no "
    "conclusion; whether notification is required is for the practice to decide. It holds no "
    "patient information: studies are named by catalog id only."
)


def _day(iso: str) -> str:
    return iso[:16].replace("T", " ") if iso else "-"


def fact_sheet(
    facts: ExposureFacts,
    *,
    repository_id: str,
    location: str,
    reported_by: str,
    note: str,
    erase: dict[str, Any] | None,
    new_epoch: int,
) -> EvidencePack:
    what = (
        "the master key (which opens the keyring, and so every data key in it)"
        if facts.scope == "master"
        else "data-key epoch " + ", ".join(str(e["id"]) for e in facts.epochs)
    )
    summary = Section(
        "The report",
        facts=[
            ("Repository", f"{repository_id[:12]} at {location}"),
            ("Key reported compromised", what),
            ("Reported to vault", f"{_day(facts.reported)} UTC by {reported_by}"),
            ("Reason given", note or "none given"),
        ],
    )
    keys = Section(
        "The keys and their dates",
        headers=["key", "created (UTC)", "state when reported"],
        rows=[[f"epoch {e['id']}", _day(e["created"]), e["state"]] for e in facts.epochs],
    )
    if facts.master is not None:
        created = _day(facts.master["created"])
        if facts.master.get("inferred"):
            created += " (from the first data key; older repositories did not record it)"
        keys.rows.insert(0, [f"master key {facts.master['id']}", created, "current"])
    sealed = Section(
        "What the keys sealed",
        facts=[
            ("Data packs", f"{facts.packs:,} ({human_bytes(facts.pack_bytes)})"),
            *[(kind.capitalize(), f"{n:,}") for kind, n in facts.objects.items()],
            ("Snapshots with data under the keys", f"{len(facts.snapshots):,}"),
            (
                "Their dates",
                f"{_day(facts.first_snapshot)} to {_day(facts.last_snapshot)} UTC"
                if facts.snapshots
                else "-",
            ),
            ("Studies in those snapshots", f"{len(facts.study_catalog_ids):,}"),
        ],
        headers=["snapshot", "time (UTC)", "host", "backed-up paths", "sealed under the keys"],
        rows=[
            [
                s["id"][:12],
                _day(s["time"]),
                s["host"],
                ", ".join(s["paths"]),
                ", ".join(s["sealed"]),
            ]
            for s in facts.snapshots
        ],
    )
    if facts.unreadable_catalogs:
        sealed.text.append(
            "The study catalogs of these snapshots cannot be read (damaged), so their studies "
            "are not counted above: " + ", ".join(s[:12] for s in facts.unreadable_catalogs)
        )
    if facts.study_catalog_ids:
        sealed.text.append(
            "Study catalog ids (resolve them with `vault studies` under the practice's access "
            "controls): " + ", ".join(facts.study_catalog_ids)
        )
    custody = Section(
        "Where the keys were",
        text=[
            "The data keys are kept only inside the keyring, which is encrypted under the master "
            "key; the master key is kept only wrapped in the key slots below, each opened by a "
            "passphrase, a key file or the recovery key. Anyone holding one of these secrets "
            "(or the master key itself) could read the keys, and with them, a copy of the "
            "objects they sealed.",
        ],
        headers=["slot", "kind", "held by", "created (UTC)"],
        rows=[[s["id"][:12], s["kind"], _holder(s), _day(s["created"])] for s in facts.slots],
    )
    done = Section("What vault did", facts=_actions(facts, erase, new_epoch))
    return EvidencePack(
        title="Key compromise: breach-assessment fact sheet",
        generated=f"{_day(facts.reported)} UTC",
        level="",
        sections=[summary, keys, sealed, custody, done],
    )


def _holder(slot: dict[str, str]) -> str:
    if slot["name"]:
        return slot["name"]
    return "the recovery key (kept off-site)" if slot["kind"] == "recovery" else "(not named)"


def _actions(
    facts: ExposureFacts, erase: dict[str, Any] | None, new_epoch: int
) -> list[tuple[str, str]]:
    steps = [
        (
            "Marked compromised",
            f"{_day(facts.reported)} UTC: nothing new is sealed under the key from then on",
        ),
        ("New current data-key epoch", str(new_epoch)),
    ]
    if facts.scope == "master":
        steps.append(
            (
                "Master key",
                "replaced; every key slot was removed, the reporter's own re-made with a new "
                "passphrase, and a new recovery key issued, so the old passphrases, key files and "
                "recovery key open nothing. The chunk-id MAC key and chunker seed in the keyring "
                "are not replaced: with the old master key one can still tell whether known file "
                "contents are stored (from object names), but not read them",
            )
        )
    if erase is None:
        steps.append(("Re-encryption", "not run yet: run `vault key rotate --reencrypt`"))
        return steps
    complete = erase["verdict"] == "complete"
    steps.append(
        (
            "Re-encryption and erase",
            f"erase certificate {erase['certificate_id']}, verdict {erase['verdict']}: everything "
            "the key sealed was rewritten under the new epoch and the key destroyed"
            + (
                ""
                if complete
                else "; but copies that still hold the key remain in the storage (below), so "
                "the erase is not complete"
            ),
        )
    )
    for item in erase.get("not_erased", []):
        steps.append(("Still holding the old key", f"{item['object']}: {item['reason']}"))
    for outside in erase.get("outside_vault_view", []):
        steps.append(("Not checked by vault", outside))
    steps.append(
        (
            "Copies made before the erase",
            "a copy of the objects taken while the key was exposed stays readable with it: the "
            "erase protects what the repository holds, not copies already made",
        )
    )
    return steps
