"""`vault init`: create a repository, deliver its recovery key once, report what the storage
offers, and record the provider's Business Associate Agreement acknowledgement."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from vault import ids
from vault.cli import recovery_key, secrets_input
from vault.cli.output import emit_json
from vault.cli.replicas import add_other_repo_options, open_other
from vault.cli.support import open_storage_for, opt, record_audit, repo_url, secret_sources
from vault.errors import StorageError, UsageError
from vault.format.config import ObjectLockPolicy
from vault.repo import append_guard, keys, signing
from vault.repo.repository import Repository


def add_init_parser(command: Callable[..., argparse.ArgumentParser]) -> None:
    p = command(
        "init", "create a new encrypted repository (prints the recovery key once)", cmd_init
    )
    p.add_argument("--recovery-key-file", metavar="FILE", help=recovery_key.OPTION_HELP)
    p.add_argument(
        "--baa-acknowledged",
        action="store_true",
        help="the storage provider has signed a Business Associate Agreement with the practice "
        "(HIPAA 164.308(b)); recorded and shown in the evidence pack (asked on a terminal)",
    )
    p.add_argument(
        "--object-lock-days",
        type=int,
        default=0,
        metavar="N",
        help="S3 only: keep every object immutable for N days (bucket needs Object Lock)",
    )
    p.add_argument(
        "--object-lock-mode",
        choices=["governance", "compliance"],
        default="governance",
        help="governance: privileged users may shorten it; compliance: nobody can (default: "
        "governance)",
    )
    p.add_argument(
        "--replica-of",
        metavar="SRC",
        help="make this repository a replica of SRC for `vault copy`: the same chunking and "
        "data keys (packs copy as stored), its own passphrase, recovery key, locks and Object "
        "Lock; SRC is opened with --from-* (default: the same secret)",
    )
    add_other_repo_options(p, "from", "source")


def cmd_init(args: argparse.Namespace) -> int:
    storage = open_storage_for(args)
    lock = None
    if args.object_lock_days:
        if args.object_lock_days < 1:
            raise UsageError("--object-lock-days must be at least 1")
        lock = ObjectLockPolicy(args.object_lock_mode.upper(), args.object_lock_days)
        if not storage.supports_object_lock():
            raise UsageError(
                f"{storage.location()} has no Object Lock: create the bucket with Object Lock "
                "enabled (it cannot be added to most existing buckets), or omit "
                "--object-lock-days"
            )
    # The source first: a replica made of a source that does not open is not made at all.
    source = open_other(args.replica_of, args, "from") if args.replica_of else None
    passphrase = secrets_input.new_passphrase(None, secret_sources(args))
    # Asked before anything is written: once the repository exists, nothing may stand between
    # it and showing its recovery key (an interrupted prompt would lose the key).
    baa = _baa_acknowledgement(args, storage.local_root() is not None)
    output = recovery_key.RecoveryKeyOutput(args, json_output=bool(opt(args, "json")))
    try:
        repo, recovery = Repository.init(
            storage, keys.Secret.from_passphrase(passphrase), object_lock=lock, replica_of=source
        )
    except BaseException:
        output.abandon()
        raise
    output.deliver(recovery, RECOVERY_HEADING)  # first: the only copy there will ever be
    try:
        versioning = storage.versioning()
    except StorageError:
        versioning = "unknown"  # credentials that may not ask; the erase certificate will say
    capabilities = append_guard.capabilities(repo)
    record_audit(
        repo,
        "init",
        result="PASS",
        details={
            "object_lock": {"mode": lock.mode, "days": lock.days} if lock else None,
            "versioning": versioning,
            "storage": capabilities,
            "baa_acknowledged": baa,
            "replica_of": source.config.repository_id if source else None,
            **signing.introduce(repo, repo.slot_id),
            **signing.introduce_recovery(repo),
        },
    )
    if opt(args, "json"):
        emit_json(
            {
                "repository_id": repo.config.repository_id,
                "location": storage.location(),
                "versioning": versioning,
                "recovery_key_file": str(output.path) if output.path else None,
                "object_lock": {"mode": lock.mode, "days": lock.days} if lock else None,
            }
        )
        return 0
    print(
        f"created vault repository {ids.short(repo.config.repository_id)} at {storage.location()}"
    )
    if source:
        print(
            f"a replica of {ids.short(source.config.repository_id)} at "
            f"{source.storage.location()}: fill it with `vault copy -r {args.replica_of} --to "
            f"{repo_url(args)}`"
        )
    if lock:
        print(f"every object is kept immutable for {lock.days} days ({lock.mode.lower()} mode);")
        print("run `vault object-lock extend` regularly (e.g. weekly) to keep history locked")
    print("storage:")
    for name, value in capabilities.items():
        print(f"  {name:20} {value}")
    print(f"  {'business associate':20} {_BAA_WORDS[baa]}")
    if versioning not in ("none", "unknown"):
        print(
            f"the bucket keeps old versions of every object (versioning {versioning}): a key "
            "erase (`vault key rotate --reencrypt`) deletes the old versions of the keyring and "
            "key slots where it may, and its certificate names any it could not"
        )
    if output.path:
        print(f"RECOVERY KEY written to {output.path} (mode 0600): print it, store it off-site,")
        print("then delete the file.")
    print("The recovery key opens the repository if the passphrase is lost. Anyone holding it")
    print("can read the backups, so keep it away from the backup server and the storage")
    print("credentials.")
    return 0


_BAA_WORDS = {
    True: "agreement acknowledged",
    False: "agreement NOT acknowledged (the evidence pack says so)",
    None: "not applicable (storage on the practice's own machine)",
}


def _baa_acknowledgement(args: argparse.Namespace, local: bool) -> bool | None:
    """Whether the storage provider's Business Associate Agreement was acknowledged: the flag,
    else a question on a terminal; None for storage on the practice's own machine."""
    if args.baa_acknowledged:
        return True
    if local:
        return None
    if sys.stdin.isatty() and not opt(args, "json"):
        answer = input(
            "Has the storage provider signed a Business Associate Agreement with the practice? "
            "[y/N] "
        )
        return answer.strip().lower() in ("y", "yes")
    return False


RECOVERY_HEADING = (
    "RECOVERY KEY (shown only this once; print it and store it off-site, e.g. in a safe):"
)
