"""`vault restore --dry-run`: what a restore would bring back, tier by tier, without writing."""

from __future__ import annotations

from dataclasses import dataclass

from vault.format.pack import BlobType
from vault.format.snapshot import Snapshot
from vault.jobs.restore.restorer import RestoreOptions, plan_restore
from vault.jobs.restore.target import Target
from vault.repo.repository import Repository


@dataclass(frozen=True)
class TierEstimate:
    number: int
    name: str
    files: int
    symlinks: int
    bytes: int  # content, as restored
    # Stored (compressed, encrypted) bytes of the tier's distinct chunks: what it fetches, less
    # the gaps of up to 1 MiB a merged read spans (vault.jobs.restore.fetch.MERGE_GAP). A chunk
    # two tiers share is fetched, and counted, in each.
    fetch_bytes: int
    existing: int  # names already in the target (a real run needs --resume or --overwrite)
    note: str


def dry_run(repo: Repository, snapshot: Snapshot, options: RestoreOptions) -> list[TierEstimate]:
    plan = plan_restore(repo, snapshot, options)
    root = options.target.absolute()
    estimates = []
    target = Target(root) if root.is_dir() else None
    try:
        for tier in plan.tiers:
            fetch = 0
            fetched: set[bytes] = set()
            for entry in tier.files:
                for chunk_hex in entry.node.chunks:
                    blob_id = bytes.fromhex(chunk_hex)
                    if blob_id in fetched:
                        continue
                    fetched.add(blob_id)
                    location = repo.index.lookup(blob_id)
                    if location is not None and location.entry.type == BlobType.DATA:
                        fetch += location.entry.length
            existing = (
                sum(1 for e in tier.entries if target.lstat(e.rel) is not None) if target else 0
            )
            estimates.append(
                TierEstimate(
                    tier.number,
                    tier.name,
                    len(tier.files),
                    len(tier.entries) - len(tier.files),
                    tier.bytes,
                    fetch,
                    existing,
                    tier.note,
                )
            )
    finally:
        if target is not None:
            target.close()
    return estimates
