"""A drill's application-level check of database dumps: each dump in the snapshot is loaded
into a scratch database (on a throwaway server vault starts, or on a configured one), and the
checks drill.toml names are run on what loaded: every table's row count, CHECK TABLE on
MariaDB/MySQL, queries that must return rows, tables that must hold at least so many rows.
The scratch database is dropped (or the throwaway server removed with its data) after each.

A record names tables and counts, never a row's content.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from vault.errors import VaultError
from vault.format.snapshot import Snapshot
from vault.jobs.database_restore import restore_database
from vault.policy.databases import DatabaseDrillPolicy, DatabaseSource
from vault.repo.repository import Repository
from vault.sources import db_loads
from vault.sources.scratch_server import ScratchServer


def _tables(source: DatabaseSource, database: str, timeout: float) -> list[str]:
    if source.kind == "postgresql":
        sql = (
            "SELECT schemaname || '.' || tablename FROM pg_tables WHERE schemaname NOT IN "
            "('pg_catalog', 'information_schema') ORDER BY 1"
        )
    else:
        sql = (
            "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE() "
            "AND table_type = 'BASE TABLE' ORDER BY 1"
        )
    return [row[0] for row in db_loads.run_sql(source, database, sql, timeout)]


def _quoted(kind: str, table: str) -> str:
    if kind == "postgresql" and "." in table:
        schema, name = table.split(".", 1)
        return f"{db_loads.quote_name(kind, schema)}.{db_loads.quote_name(kind, name)}"
    return db_loads.quote_name(kind, table)


def _not_ok(kind: str, text: str) -> bool:
    return kind in ("error", "warning") or (kind == "status" and text.upper() != "OK")


def _checks(
    source: DatabaseSource, database: str, policy: DatabaseDrillPolicy
) -> tuple[dict[str, Any], list[str]]:
    problems: list[str] = []
    timeout = float(policy.timeout_seconds)
    tables = _tables(source, database, timeout)
    rows: dict[str, int] = {}
    for table in tables:
        count = db_loads.run_sql(
            source, database, f"SELECT COUNT(*) FROM {_quoted(source.kind, table)}", timeout
        )
        rows[table] = int(count[0][0]) if count else 0
    if not tables:
        problems.append("the dump loaded no table")
    checked_tables = None
    if policy.check_tables and source.kind != "postgresql" and tables:
        names = ", ".join(_quoted(source.kind, t) for t in tables)
        out = db_loads.run_sql(source, database, f"CHECK TABLE {names}", timeout)
        # Rows: table, op, msg_type, msg_text. A table is fine with a status of OK; notes
        # (an engine that cannot check) are not findings.
        bad = [r for r in out if len(r) >= 4 and _not_ok(r[2].lower(), r[3])]
        checked_tables = {"tables": len(tables), "not_ok": len(bad)}
        problems += [f"CHECK TABLE {r[0]}: {r[3]}" for r in bad]
    for table, minimum in policy.min_rows:
        held = next((n for t, n in rows.items() if t == table or t.endswith("." + table)), None)
        if held is None:
            problems.append(f"table {table} is not in the loaded dump")
        elif held < minimum:
            problems.append(f"table {table} holds {held} rows, fewer than {minimum}")
    queries = []
    for number, sql in enumerate(policy.queries, start=1):
        try:
            found = len(db_loads.run_sql(source, database, sql, timeout))
        except VaultError as exc:
            problems.append(f"query {number} failed: {exc}")
            queries.append({"query": number, "rows": None, "result": "FAIL"})
            continue
        if not found:
            problems.append(f"query {number} returned no rows")
        queries.append({"query": number, "rows": found, "result": "PASS" if found else "FAIL"})
    facts = {
        "tables": len(tables),
        "rows": sum(rows.values()),
        "row_counts": rows,
        "check_table": checked_tables,
        "queries": queries,
    }
    return facts, problems


def check_dumps(
    repo: Repository,
    snapshot: Snapshot,
    policy: DatabaseDrillPolicy,
    *,
    server_for: Callable[[str], ScratchServer] = ScratchServer,
) -> tuple[list[dict[str, Any]], list[str]]:
    """(a result per dump, failure reasons). The dumps are the drilled snapshot's, or, when
    it has none (a PACS snapshot written after the nightly one), those of the newest snapshot
    before it that has them. No dump at all is itself a failure: the drill was asked to prove
    a database and found none."""
    if not snapshot.databases:
        earlier = [s for s in repo.snapshots() if s.databases and s.time <= snapshot.time]
        snapshot = earlier[-1] if earlier else snapshot
    dumps = [r for r in snapshot.databases if r.get("result") == "PASS" and r["kind"] != "command"]
    if not dumps:
        failed = [r for r in snapshot.databases if r.get("result") != "PASS"]
        why = (
            f"the snapshot's {len(failed)} database dump(s) failed at backup"
            if failed
            else "the snapshot holds no MariaDB, MySQL or PostgreSQL dump"
        )
        return [], [f"database check: {why}"]
    configured = policy.server_source()
    results: list[dict[str, Any]] = []
    failures: list[str] = []
    for record in dumps:
        label = f"{record['source']}/{record['database']}"
        entry: dict[str, Any] = {
            "dump": label,
            "kind": record["kind"],
            "snapshot_id": snapshot.id,
            "dumped": record["started"],
        }
        scratch_name = "vault_drill_" + secrets.token_hex(4)
        t0 = time.monotonic()
        server: ScratchServer | None = None
        problems: list[str] = []
        try:
            if configured is not None:
                target = configured
                entry["server"] = f"configured ({configured.where()})"
            else:
                server = server_for(record["kind"])
                target = server.start()
                entry["server"] = f"throwaway {server.kind} server"
            into = replace(target, databases=(scratch_name,))
            loaded = restore_database(repo, snapshot, label, into, timeout=policy.timeout_seconds)
            entry["load_seconds"] = round(loaded.seconds, 3)
            entry["bytes"] = loaded.bytes
            facts, problems = _checks(into, scratch_name, policy)
            entry.update(facts)
        except VaultError as exc:
            problems.append(str(exc))
        finally:
            if configured is not None:
                try:
                    db_loads.drop_database(configured, scratch_name)
                    entry["scratch_dropped"] = True
                except VaultError as exc:
                    entry["scratch_dropped"] = False
                    problems.append(f"the scratch database {scratch_name} was not dropped: {exc}")
            elif server is not None:
                server.stop()
                entry["scratch_dropped"] = not server.directory.exists()
        entry["seconds"] = round(time.monotonic() - t0, 3)
        entry["problems"] = problems
        entry["result"] = "FAIL" if problems else "PASS"
        if problems:
            failures.append(f"database {label}: " + "; ".join(problems))
        results.append(entry)
    return results, failures
