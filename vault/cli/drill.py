"""The `vault drill …` commands: run a restore drill, its history, the evidence report, and
review annotations."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from vault.cli.output import emit_json, table
from vault.cli.pacs import endpoint_of
from vault.cli.secrets_input import prompt, read_secret_file
from vault.cli.support import open_repo, opt, progress_for, record_audit, request_stats
from vault.errors import UsageError
from vault.evidence import drill, drill_log, drill_report
from vault.evidence.drill_report import database_summary, pacs_summary
from vault.policy.databases import load_database_drill_policy
from vault.policy.files import load_drill_policy, policy_dir
from vault.repo import lock
from vault.repo.keys import KEYFILE, Secret, parse_key_file


def add_drill_parsers(
    common: argparse.ArgumentParser, command: Callable[..., argparse.ArgumentParser]
) -> None:
    p = command("drill", "run a timed, verified restore drill and record the evidence", cmd_drill)
    what = p.add_mutually_exclusive_group()
    what.add_argument("--sample", type=int, metavar="N", help="studies to sample (policy default)")
    what.add_argument("--full", action="store_true", help="restore everything (annual drill)")
    p.add_argument("--snapshot", default="latest", metavar="S", help="default: latest")
    p.add_argument("--target", metavar="DIR", help="keep the restored files here")
    p.add_argument("--seed", type=int, help="seed of the random sample (recorded)")
    p.add_argument("--operator", metavar="NAME", help="who runs the drill (name and role)")
    p.add_argument("--objective", metavar="TEXT", help="the drill's objective, for the record")
    p.add_argument(
        "--compare-source",
        action="store_true",
        help="also compare restored files with unchanged live source files",
    )
    p.add_argument(
        "--source-root",
        metavar="DIR",
        help="with --compare-source: compare with the files under DIR (e.g. a whole restore on "
        "a new machine) instead of the live paths",
    )
    p.add_argument(
        "--key-check",
        action="store_true",
        help="also open the repository with the recovery key (break-glass); reads it from "
        "$VAULT_RECOVERY_KEY_FILE or asks",
    )
    p.add_argument(
        "--into-pacs",
        metavar="NAME|AET@HOST:PORT",
        help="also send each restored study into this (standby) PACS with C-STORE and ask it "
        "back with C-FIND (study, series, image level): the study must be there, whole",
    )
    p.add_argument(
        "--allow-plain-dicom",
        action="store_true",
        help="with --into-pacs AET@HOST:PORT off this machine: allow plain DICOM",
    )
    p.add_argument("--policy-dir", metavar="DIR", help="directory with drill.toml (and pacs.toml)")
    p.add_argument(
        "--database",
        action="store_true",
        help="also load each database dump of the snapshot into a scratch database (a "
        "throwaway server, or drill.toml's [database] server), run the checks drill.toml "
        "names (row counts, CHECK TABLE, queries that must return rows), then drop it "
        "(always, with [database] check = true)",
    )
    p.add_argument(
        "--record-dir",
        metavar="DIR",
        help="where the local JSON copy goes (default ~/.local/share/vault/drills)",
    )
    sub = p.add_subparsers(dest="drill_command", metavar="ACTION")

    h = sub.add_parser("history", parents=[common], help="list recorded drills")
    h.add_argument("--verify", action="store_true", help="check the hash chain")
    h.set_defaults(func=cmd_history)
    r = sub.add_parser("report", parents=[common], help="the evidence report for auditors")
    r.add_argument("--format", choices=["html", "md", "json"], default="html")
    r.add_argument("--since", metavar="DATE", help="only drills on or after DATE")
    r.add_argument("--out", metavar="FILE", help="write here instead of stdout")
    r.set_defaults(func=cmd_report)
    a = sub.add_parser("annotate", parents=[common], help="add review fields to a drill record")
    a.add_argument("drill_id", metavar="ID", help="drill id or prefix")
    a.add_argument("--lessons", metavar="TEXT")
    a.add_argument("--corrective-actions", metavar="TEXT")
    a.add_argument("--reviewer", metavar="NAME")
    a.add_argument("--witness", metavar="NAME")
    a.add_argument("--approved", action="store_true", help="the reviewer signs off")
    a.set_defaults(func=cmd_annotate)


def _recovery_secret() -> Secret:
    path = os.environ.get("VAULT_RECOVERY_KEY_FILE")
    if path:
        text = read_secret_file(path, "recovery key file").strip()
        if text.startswith("vault-keyfile-v1"):
            return Secret(KEYFILE, parse_key_file(text, name=path))
        return Secret.from_passphrase(text)
    return Secret.from_passphrase(prompt("Recovery key (break-glass check): "))


def cmd_drill(args: argparse.Namespace) -> int:
    policy = load_drill_policy(policy_dir(args.policy_dir))
    if args.sample is not None and args.sample < 1:
        raise UsageError("--sample must be at least 1")
    if args.source_root and not args.compare_source:
        raise UsageError("--source-root goes with --compare-source")
    if args.source_root and not Path(args.source_root).is_dir():
        raise UsageError(f"--source-root {args.source_root} is not a directory")
    recovery = _recovery_secret() if args.key_check else None
    into_pacs = endpoint_of(args, args.into_pacs) if args.into_pacs else None
    database_policy = load_database_drill_policy(policy_dir(args.policy_dir))
    database_check = database_policy if args.database or database_policy.check else None
    repo = open_repo(args)
    snapshot = repo.find_snapshot(args.snapshot)
    options = drill.DrillOptions(
        sample=args.sample,
        full=args.full,
        seed=args.seed,
        target=Path(args.target) if args.target else None,
        operator=args.operator or "",
        objective=args.objective or "",
        compare_source=args.compare_source,
        source_root=Path(args.source_root) if args.source_root else None,
        recovery_secret=recovery,
        into_pacs=into_pacs,
        database_check=database_check,
    )
    # Drills only read: a shared lock, and nothing in the backup can change.
    with lock.Lock(repo.storage, repo.keyring, exclusive=False, operation="drill"):
        record = drill.run_drill(
            repo,
            snapshot,
            options,
            policy,
            progress=progress_for(args),
            request_stats=lambda: request_stats(repo),
        )
        stored = drill_log.store_record(repo, record)
    local = drill_log.write_local_copy(
        stored, Path(args.record_dir) if args.record_dir else drill_log.local_copy_dir()
    )
    record_audit(
        repo,
        "drill",
        result=stored["result"],
        snapshot=snapshot.id,
        catalog_ids=[i["id"] for i in stored["items"] if i["kind"] == "study"],
        details={"drill_id": stored["drill_id"]},
    )
    if opt(args, "json"):
        emit_json({**stored, "local_copy": str(local)})
    else:
        v = stored["volume"]
        print(f"drill {stored['drill_id']}: {stored['result']}")
        print(
            f"  {stored['scenario']}: {len(stored['items'])} item(s), {v['files']} files, "
            f"{v['bytes'] / 1e6:.1f} MB in {stored['timing']['total_seconds']:.1f}s "
            f"({v['throughput_bytes_per_second'] / 1e6:.1f} MB/s)"
            + (", every file verified" if stored["result"] == "PASS" else "")
        )
        for o in stored["objectives"]:
            print(
                f"  {o['name']}: "
                + (
                    f"{o['measured_seconds']:.1f}s"
                    if o["measured_seconds"] is not None
                    else o.get("note", "-")
                )
                + f" (target {o['target_seconds']:.0f}s) {o['result']}"
            )
        pacs = pacs_summary(stored)
        if pacs:
            print(f"  PACS check: {pacs}")
        database = database_summary(stored)
        if database:
            print(f"  database check: {database}")
        for reason in stored["failure_reasons"]:
            print(f"  FAIL: {reason}")
        print(f"  scratch data deleted: {'yes' if stored['scratch']['deleted'] else 'NO'}")
        print(f"  record: drill #{stored['seq']} in the repository; local copy {local}")
    return 0 if stored["result"] == "PASS" else 1


def cmd_history(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    report = drill_log.history(repo, verify=args.verify)
    records = drill_log.merged(report)
    if opt(args, "json"):
        emit_json(
            {
                "drills": records,
                "problems": report.problems,
                "outcome": "PASS" if report.ok else "FAIL",
            }
        )
    else:
        print(
            table(
                ["#", "DRILL", "STARTED (UTC)", "SCENARIO", "ITEMS", "TIME", "RESULT", "REVIEWED"],
                [
                    [
                        str(r["seq"]),
                        r["drill_id"][:8],
                        r["started"][:19],
                        r["scenario"].split(" ")[0],
                        str(r["sample"]["items"]),
                        f"{r['timing']['total_seconds']:.1f}s",
                        r["result"],
                        "yes" if r.get("approved") else "no",
                    ]
                    for r in records
                ],
            )
        )
        for problem in report.problems:
            print(f"vault: error: {problem}", file=sys.stderr)
        if args.verify and report.ok:
            print(f"drill record chain intact: {len(report.records)} record(s)")
    return 0 if report.ok else 1


def cmd_report(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    report = drill_log.history(repo, verify=True)
    records = drill_log.merged(report)
    if args.since:
        since = args.since.replace("-", "")
        records = [r for r in records if r["started"][:10].replace("-", "") >= since]
    render = {
        "html": drill_report.as_html,
        "md": drill_report.as_markdown,
        "json": drill_report.as_json,
    }[args.format]
    head = f"record #{report.head_seq}, SHA-256 {report.head_sha256}" if report.head_seq else ""
    text = render(records, head)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"wrote the {args.format} drill report ({len(records)} drill(s)) to {args.out}")
    else:
        sys.stdout.write(text)
    for problem in report.problems:
        print(f"vault: warning: drill record chain: {problem}", file=sys.stderr)
    return 0


def cmd_annotate(args: argparse.Namespace) -> int:
    fields = {
        "lessons_learned": args.lessons,
        "corrective_actions": args.corrective_actions,
        "reviewer": args.reviewer,
        "witness": args.witness,
        "approved": True if args.approved else None,
    }
    fields = {k: v for k, v in fields.items() if v is not None}
    if not fields:
        raise UsageError(
            "nothing to add: give --lessons, --corrective-actions, --reviewer, "
            "--witness or --approved"
        )
    repo = open_repo(args)
    note = drill_log.annotate(repo, args.drill_id, fields)
    record_audit(
        repo,
        "drill-annotate",
        result="PASS",
        details={"drill_id": note["drill_id"], "fields": sorted(fields)},
    )
    if opt(args, "json"):
        emit_json(note)
    else:
        print(f"annotated drill {note['drill_id'][:8]} (record #{note['seq']})")
    return 0
