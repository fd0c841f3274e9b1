"""`vault pacs echo`, and `vault restore --study … --to-pacs NAME`: speaking DICOM to a PACS.

Endpoints come from pacs.toml in the policy directory (`--policy-dir`, `$VAULT_POLICY_DIR`) by
name, or written out as AET@HOST:PORT. What reaches the terminal, the JSON and the audit log
names studies by catalog id and instances by their number in the study: never a UID, a
patient or a file path.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vault import ids
from vault.cli.output import emit_json
from vault.cli.support import opt, progress_for, record_audit, usage
from vault.dicom.catalog import Study
from vault.errors import VaultError
from vault.format.snapshot import Snapshot
from vault.policy.files import policy_dir
from vault.policy.pacs import PACS_FILE, PacsEndpoint, resolve_endpoint
from vault.repo import lock
from vault.repo.repository import Repository
from vault.units import counted, human_bytes

if TYPE_CHECKING:
    from vault.jobs.pacs_backup import PacsBackupResult
    from vault.jobs.pacs_send import PacsSendResult

# pynetdicom (and with it pydicom, ssl and more) is imported by the commands that speak DICOM,
# not by every command line that has these options.

SHOWN = 10  # problems named on a terminal (--json lists every one)


def add_endpoint_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--policy-dir", metavar="DIR", help="directory with pacs.toml ($VAULT_POLICY_DIR)"
    )
    p.add_argument(
        "--allow-plain-dicom",
        action="store_true",
        help="let an endpoint written out as AET@HOST:PORT off this machine speak plain DICOM "
        "(patient data unencrypted on the network)",
    )


def add_pacs_parsers(
    common: argparse.ArgumentParser, command: Callable[..., argparse.ArgumentParser]
) -> None:
    p = command("pacs", "speak DICOM to the practice's PACS or viewer", lambda a: usage("pacs"))
    sub = p.add_subparsers(dest="pacs_command", metavar="ACTION", required=True)
    e = sub.add_parser(
        "echo",
        parents=[common],
        help="check that vault can open an association with a PACS (C-ECHO)",
        description="Open an association with the PACS and send a C-ECHO; when it fails, say "
        "why (AE title refused, TLS, no answer, wrong port).",
    )
    e.set_defaults(func=cmd_pacs_echo)
    e.add_argument(
        "endpoint",
        metavar="NAME|AET@HOST:PORT",
        help="an endpoint of pacs.toml, or one written out",
    )
    add_endpoint_options(e)


def endpoint_of(args: argparse.Namespace, given: str) -> PacsEndpoint:
    directory = policy_dir(opt(args, "policy_dir"))
    pacs_file = directory / PACS_FILE if directory else None
    return resolve_endpoint(given, pacs_file, allow_plain=bool(opt(args, "allow_plain_dicom")))


def cmd_pacs_echo(args: argparse.Namespace) -> int:
    from vault.pacs.echo import echo

    endpoint = endpoint_of(args, args.endpoint)
    seconds = echo(endpoint)
    if opt(args, "json"):
        emit_json({"endpoint": endpoint.name, "ae_title": endpoint.ae_title,
                   "host": endpoint.host, "port": endpoint.port, "tls": endpoint.tls is not None,
                   "calling_ae_title": endpoint.calling_ae_title,
                   "round_trip_seconds": round(seconds, 4), "outcome": "PASS"})  # fmt: skip
    else:
        print(f"C-ECHO to {endpoint.describe()}: OK in {seconds * 1000:.0f} ms "
              f"(vault called as {endpoint.calling_ae_title})")  # fmt: skip
    return 0


def restore_to_pacs(
    args: argparse.Namespace, repo: Repository, snapshot: Snapshot, studies: list[Study]
) -> int:
    from vault.jobs.pacs_send import send_studies

    endpoint = endpoint_of(args, args.to_pacs)
    staging = Path(args.staging) if opt(args, "staging") else None
    try:
        # A shared lock, as any restore takes: prune cannot delete what is being read.
        with lock.Lock(repo.storage, repo.keyring, exclusive=False, operation="restore-to-pacs"):
            result = send_studies(repo, snapshot, studies, endpoint, progress_for(args),
                                  staging=staging)  # fmt: skip
    except BaseException:  # an error, or Ctrl-C: the event says FAIL, then the error is told
        _audit(repo, snapshot, studies, endpoint, None)
        raise
    _audit(repo, snapshot, studies, endpoint, result)
    if opt(args, "json"):
        emit_json(_document(snapshot, endpoint, result))
    else:
        _print(snapshot, endpoint, result)
    if result.instances == 0:
        raise VaultError(f"nothing was sent to {endpoint.name}: the studies hold no instance "
                         "vault can send as stored (notes above)")  # fmt: skip
    if not result.ok:
        raise VaultError(
            f"{len(result.store.failures)} of {result.instances} instance(s) were not stored "
            f"in {endpoint.name}"
        )
    return 0


def _audit(
    repo: Repository,
    snapshot: Snapshot,
    studies: list[Study],
    endpoint: PacsEndpoint,
    result: PacsSendResult | None,  # None: it stopped with an error (the caller prints it)
) -> None:
    details: dict[str, Any] = {"endpoint": endpoint.name, "tls": endpoint.tls is not None}
    if result is not None:
        details |= {
            "instances": result.instances,
            "stored": len(result.store.stored),
            "warnings": len(result.store.warnings),
            "failed": len(result.store.failures),
            "skipped": len(result.skipped),
            "bytes": result.store.bytes_sent,
        }
    record_audit(
        repo,
        "restore-to-pacs",
        result="PASS" if result is not None and result.ok else "FAIL",
        snapshot=snapshot.id,
        catalog_ids=[s.catalog_id for s in studies],
        details=details,
    )


def _document(snapshot: Snapshot, endpoint: PacsEndpoint, result: PacsSendResult) -> dict[str, Any]:
    store = result.store
    return {
        "snapshot_id": snapshot.id,
        "endpoint": endpoint.name,
        "tls": endpoint.tls is not None,
        "studies": result.studies,
        "instances": result.instances,
        "stored": len(store.stored),
        "warnings": [{"instance": label, "reason": why} for label, why in store.warnings],
        "failures": [{"instance": label, "reason": why} for label, why in store.failures],
        "skipped": [{"instance": label, "reason": why} for label, why in result.skipped],
        "bytes_sent": store.bytes_sent,
        "associations": store.associations,
        "retries": store.retries,
        "restore_seconds": round(result.restore_seconds, 3),
        "send_seconds": round(store.seconds, 3),
        "send_bytes_per_second": round(store.bytes_sent / store.seconds) if store.seconds else None,
        "outcome": "PASS" if result.ok else "FAIL",
    }


def _print(snapshot: Snapshot, endpoint: PacsEndpoint, result: PacsSendResult) -> None:
    store = result.store
    for label, why in result.skipped[:SHOWN]:
        print(f"vault: note: instance {label} not sent: {why}", file=sys.stderr)
    for label, why in store.warnings[:SHOWN]:
        print(f"vault: warning: instance {label}: {why}", file=sys.stderr)
    for label, why in store.failures[:SHOWN]:
        print(f"vault: error: instance {label}: {why}", file=sys.stderr)
    hidden = sum(max(0, len(x) - SHOWN) for x in (result.skipped, store.warnings, store.failures))
    if hidden:
        print(f"vault: … and {hidden} more (--json lists every one)", file=sys.stderr)
    rate = store.bytes_sent / store.seconds if store.seconds else 0.0
    print(
        f"sent {len(store.stored)} of {counted(result.instances, 'instance')} of "
        f"{counted(len(result.studies), 'study', 'studies')} from snapshot "
        f"{ids.short(snapshot.id)} to "
        f"{endpoint.describe()}: {human_bytes(store.bytes_sent)} in {store.seconds:.1f}s "
        f"({human_bytes(int(rate))}/s; restored and verified in {result.restore_seconds:.1f}s)"
    )


def pacs_document(endpoint: PacsEndpoint, result: PacsBackupResult) -> dict[str, Any]:
    return {
        "endpoint": endpoint.name,
        "tls": endpoint.tls is not None,
        "studies": result.studies,
        "studies_fetched": result.studies_fetched,
        "studies_already_held": result.studies_held,
        "instances_fetched": result.instances_fetched,
        "bytes_fetched": result.bytes_fetched,
        "problems": result.problems,
    }


def pacs_line(endpoint: PacsEndpoint, result: PacsBackupResult) -> str:
    return (
        f"PACS {endpoint.describe()}: {counted(result.studies, 'study', 'studies')}; fetched "
        f"{counted(result.instances_fetched, 'instance')} from "
        f"{counted(result.studies_fetched, 'study', 'studies')} "
        f"({human_bytes(result.bytes_fetched)}); {result.studies_held} already held whole"
    )
