"""`vault copy --to DST`: snapshots into a replica made by `vault init --replica-of SRC`, and
the options that open the other repository of the pair with its own secret."""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from vault.cli import secrets_input
from vault.cli.key_workflows import Erase, run_reencrypt
from vault.cli.output import emit_json
from vault.cli.support import (
    open_repo,
    opt,
    progress_for,
    record_audit,
    record_break_glass,
    secret_sources,
    sigterm_sets,
)
from vault.errors import VaultError
from vault.jobs.copy.independent import copy_independent
from vault.jobs.copy.replica import CopyResult, check_pair, copy_snapshots, is_replica, to_copy
from vault.jobs.copy.sync import (
    TagsCarried,
    carry_tags,
    destroyed_epochs,
    erase_to_follow,
    follow_keys,
)
from vault.repo import jobstate, lock
from vault.repo.keys import RECOVERY
from vault.repo.location import ensure_exists
from vault.repo.repository import Repository
from vault.storage import CountingStorage, open_storage
from vault.units import human_bytes, human_seconds


def add_other_repo_options(p: argparse.ArgumentParser, prefix: str, whose: str) -> None:
    """--PREFIX-password-file, --PREFIX-password-command, --PREFIX-key-file: the secret of the
    other repository of a pair (default: the same secret as this one)."""
    p.add_argument(
        f"--{prefix}-password-file",
        metavar="FILE",
        help=f"the {whose} repository's passphrase file (default: the same secret)",
    )
    p.add_argument(
        f"--{prefix}-password-command",
        metavar="CMD",
        help=f"a command printing the {whose} repository's passphrase",
    )
    p.add_argument(f"--{prefix}-key-file", metavar="FILE",
                   help=f"open the {whose} repository with a key file")  # fmt: skip
    p.add_argument(f"--{prefix}-two-factor", action="store_true",
                   help=f"the {whose} repository's slot needs --{prefix}-key-file and a "
                        "passphrase together")  # fmt: skip


def other_secret_sources(args: argparse.Namespace, prefix: str) -> secrets_input.SecretSources:
    key = prefix.replace("-", "_")
    given = secrets_input.SecretSources(
        opt(args, f"{key}_password_file"),
        opt(args, f"{key}_password_command"),
        opt(args, f"{key}_key_file"),
        bool(opt(args, f"{key}_two_factor")),
    )
    if given.password_file or given.password_command or given.key_file or given.two_factor:
        return given
    return secret_sources(args)


def open_other(url: str, args: argparse.Namespace, prefix: str) -> Repository:
    storage = CountingStorage(
        open_storage(url, allow_insecure_http=bool(opt(args, "allow_insecure_http")))
    )
    ensure_exists(storage)
    repo = Repository.open(
        storage, secrets_input.existing_secret(other_secret_sources(args, prefix))
    )
    if repo.slot_kind == RECOVERY:  # break-glass there too, as for --repo
        record_break_glass(repo, str(opt(args, "command", "") or ""))
    return repo


def add_replica_parsers(command: Callable[..., argparse.ArgumentParser]) -> None:
    p = command(
        "copy",
        "copy snapshots into a replica (made with `vault init --replica-of`), packs as stored",
        cmd_copy,
    )
    p.description = (
        "Copy snapshots, and the packs, trees and catalogs they need, from this repository\n"
        "(--repo) into its replica (--to). A pack the replica lacks entirely is copied as it is\n"
        "stored, never decrypted; from a pack it needs only part of, just those blobs are\n"
        "sealed into new packs. Packs first, then the index, then each snapshot, read back.\n"
        "A killed copy resumes without sending again what arrived. Snapshots the replica's\n"
        "own retention forgot are not copied again. Before anything is sent, the replica\n"
        "takes the source's key rotations and erases, and tags added on the source.\n"
        "\n"
        "With --independent, into a repository of its own (its own keys and chunker, not made\n"
        "with --replica-of): every chunk is read, authenticated and re-encrypted there, blob\n"
        "by blob, for moving to a new repository. Only what it lacks is stored, but each copy\n"
        "reads the chunks of the snapshots it copies again."
    )
    p.add_argument("snapshots", nargs="*", metavar="SNAPSHOT",
                   help="snapshots to copy (default: every one the replica lacks)")  # fmt: skip
    p.add_argument(
        "--to",
        required=True,
        metavar="REPO",
        help="the replica, or an independent repository: a path or s3://...",
    )
    add_other_repo_options(p, "to", "replica")
    p.add_argument("--verify-data", action="store_true",
                   help="also read back and authenticate every copied blob")  # fmt: skip
    p.add_argument("--independent", action="store_true",
                   help="the destination is a repository of its own (not made with "
                        "--replica-of): copy blob by blob, re-encrypted")  # fmt: skip
    p.add_argument("--certificate", metavar="FILE",
                   help="when this copy completes on the replica an erase the source made "
                        "(`vault key rotate --reencrypt`), write the replica's erase "
                        "certificate (JSON) to FILE")  # fmt: skip


def cmd_copy(args: argparse.Namespace) -> int:
    source = open_repo(args)
    try:
        replica = open_other(args.to, args, "to")
        check_pair(source, replica, independent=bool(args.independent))
    except VaultError as exc:
        # In the source's log: `status` there shows a replica that cannot be reached or opened.
        unreached = {"error": type(exc).__name__, "to_location": _location(args)}
        record_audit(source, "copy", result="FAIL", details=unreached)
        _remember(source, unreached["to_location"], "", passed=False)
        raise
    wanted = [source.find_snapshot(ref) for ref in args.snapshots] if args.snapshots else None
    started = datetime.now(UTC)
    stop = threading.Event()
    place = replica.storage.location()
    last = (jobstate.load(source, jobstate.REPLICAS) or {}).get("replicas", {}).get(place, {})
    erase: Erase | None = None
    independent = not is_replica(source, replica)
    try:
        with sigterm_sets(stop), lock.Lock(source.storage, source.keyring, exclusive=False,
                                           operation="copy"):  # fmt: skip
            source.refresh_keyring()  # a rotation may have finished since the open
            everything = source.snapshots()
            with lock.Lock(replica.storage, replica.keyring, exclusive=True,
                           operation="copy-keys") as held:  # fmt: skip
                # An independent repository has keys of its own: nothing to follow or erase.
                keys_updated = not independent and follow_keys(source, replica)
                to_erase = set() if independent else erase_to_follow(source, replica)
                if to_erase:  # before anything is sent: the replica's packs under those keys
                    erase = run_reencrypt(args, replica, to_erase, held=held)
                tags = carry_tags(everything, replica, last.get("tags"))
            with lock.Lock(replica.storage, replica.keyring, exclusive=False, operation="copy"):
                replica.refresh_keyring()
                plan = to_copy(source, replica, wanted if wanted is not None else everything)
                copy = copy_independent if independent else copy_snapshots
                result = copy(source, replica, plan.snapshots, verify_data=args.verify_data,
                              progress=progress_for(args), stop=stop)  # fmt: skip
    except VaultError as exc:
        failed = {"error": type(exc).__name__, "from": source.config.repository_id}
        record_audit(replica, "copy", result="FAIL", details=failed)
        # The source's log and record too: `status` there shows a replica whose copies fail.
        record_audit(source, "copy", result="FAIL", details={
            "error": type(exc).__name__, "to": replica.config.repository_id,
            "to_location": replica.storage.location()})  # fmt: skip
        _remember(source, replica.storage.location(), replica.config.repository_id, passed=False)
        raise
    result.keyring_updated, result.already_there = keys_updated, plan.present
    result.forgotten = plan.forgotten
    seconds = (datetime.now(UTC) - started).total_seconds()
    details = {**_details(source, result, seconds), **_synced(erase, tags)}
    tags.record.update({s.id: list(s.tags) for s in plan.snapshots})
    # The ids (random, never patient data): `check` on the replica then notices a copied
    # snapshot deleted behind vault's back, as it does a backed-up one.
    record_audit(replica, "copy", result="PASS", details={**details, "snapshots": result.copied})
    # What the replica holds now, for `status` here: every snapshot up to the newest copied.
    newest = plan.newest
    to = {
        "to": replica.config.repository_id,
        "to_location": replica.storage.location(),
        "holds_up_to": newest.isoformat() if newest else None,
    }
    record_audit(source, "copy", result="PASS", details={**details, **to})
    _remember(source, place, replica.config.repository_id, passed=True,
              holds_up_to=to["holds_up_to"], destroyed_epochs=sorted(destroyed_epochs(source)),
              tags=tags.record, mode=result.mode)  # fmt: skip
    if opt(args, "json"):
        emit_json({"source": source.storage.location(), "replica": place, **details,
                   "snapshots": result.copied, "outcome": "PASS",
                   **({"erase_certificate": erase.certificate} if erase else {})})  # fmt: skip
        return 0
    _print(result, seconds, replica)
    _print_synced(erase, tags, args)
    return 0


def _synced(erase: Erase | None, tags: TagsCarried) -> dict[str, object]:
    return {
        "epochs_erased": erase.result.retired if erase else [],
        "retagged": tags.retagged,
        "tags_kept": tags.kept,
    }


def _print_synced(erase: Erase | None, tags: TagsCarried, args: argparse.Namespace) -> None:
    if erase:
        verdict = erase.certificate["verdict"]
        print(
            f"  erased: key epoch(s) {', '.join(map(str, erase.result.retired))} destroyed on "
            f"the replica too, after {erase.result.packs_rewritten} of its pack(s) were "
            f"re-encrypted (erase certificate: {verdict}"
            + (f", written to {args.certificate})" if opt(args, "certificate") else ")")
        )
    if tags.retagged:
        print(f"  tags: {len(tags.retagged)} snapshot(s) given the tags added on the source")
    for snapshot_id, kept in sorted(tags.kept.items()):
        print(
            f"  tags: {', '.join(kept)} came off snapshot {snapshot_id[:8]} on the source but "
            f"stays on the replica (take it off there with `vault tag --remove`)"
        )


def _remember(
    source: Repository,
    place: str,
    replica_id: str,
    *,
    passed: bool,
    holds_up_to: object = None,
    destroyed_epochs: list[int] | None = None,
    tags: dict[str, list[str]] | None = None,
    mode: str | None = None,
) -> None:
    """The source's record for `status`; a failure to write it is a warning, not the copy's."""
    try:
        jobstate.remember_copy(source, place, replica_id=replica_id, passed=passed,
                               when=datetime.now(UTC).isoformat(timespec="seconds"),
                               holds_up_to=str(holds_up_to) if holds_up_to else None,
                               destroyed_epochs=destroyed_epochs, tags=tags,
                               mode=mode)  # fmt: skip
    except VaultError as exc:
        print(f"vault: warning: could not record the copy for `vault status`: {exc}",
              file=sys.stderr)  # fmt: skip


def _location(args: argparse.Namespace) -> str:
    try:
        return open_storage(
            args.to, allow_insecure_http=bool(opt(args, "allow_insecure_http"))
        ).location()
    except VaultError:
        return str(args.to).split("?", 1)[0]


def _details(source: Repository, result: CopyResult, seconds: float) -> dict[str, object]:
    return {
        "from": source.config.repository_id,
        "mode": result.mode,
        "copied": len(result.copied),
        "already_there": result.already_there,
        "forgotten_skipped": len(result.forgotten),
        "packs_copied": result.packs_copied,
        "bytes_copied": result.bytes_copied,
        "packs_resumed": result.packs_resumed,
        "bytes_resumed": result.bytes_resumed,
        "blobs_repacked": result.blobs_repacked,
        "bytes_repacked": result.bytes_repacked,
        "blobs_verified": result.blobs_verified,
        "blobs_read": result.blobs_read,
        "bytes_read": result.bytes_read,
        "keyring_updated": result.keyring_updated,
        "duration_seconds": round(seconds, 3),
    }


def _print(result: CopyResult, seconds: float, replica: Repository) -> None:
    where = replica.storage.location()
    if not result.copied:
        print(f"{where} already holds every snapshot to copy ({result.already_there})")
    else:
        print(f"copied {len(result.copied)} snapshot(s) to {where} in {human_seconds(seconds)}")
    if result.mode == "independent":
        print(
            f"  an independent repository: {result.blobs_read} chunk(s) read "
            f"({human_bytes(result.bytes_read)}) and re-encrypted; {result.blobs_repacked} "
            f"blob(s), chunks and trees, new there ({human_bytes(result.bytes_repacked)})"
        )
    else:
        print(
            f"  packs: {result.packs_copied} copied as stored "
            f"({human_bytes(result.bytes_copied)}), {result.blobs_repacked} blob(s) repacked "
            f"({human_bytes(result.bytes_repacked)})"
        )
    if result.packs_resumed:
        print(
            f"  resumed: {result.packs_resumed} pack(s) an interrupted copy had sent were checked "
            f"and kept ({human_bytes(result.bytes_resumed)} not sent again)"
        )
    if result.forgotten:
        print(f"  left out: {len(result.forgotten)} snapshot(s) the replica's retention forgot")
    if result.keyring_updated:
        print("  the replica's keyring now follows the source's key rotations")
    if result.blobs_verified:
        print(f"  verified: {result.blobs_verified} blob(s) read back and authenticated")
    if result.already_there and result.copied:
        print(f"  {result.already_there} snapshot(s) were there already", file=sys.stdout)
