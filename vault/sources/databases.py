"""Database dumps, read as a stream: the server's own dump tool (mariadb-dump / mysqldump,
pg_dump, or a command), its output given block by block, and judged whole or not at its end.
Loads and queries are in vault.sources.db_loads; the process plumbing in vault.sources.db_tools.
"""

from __future__ import annotations

import os
import threading

from vault.policy.databases import DatabaseSource
from vault.sources.db_tools import (
    DatabaseError,
    Invocation,
    StderrTail,
    base_environment,
    dump_tool,
    exit_reason,
    kill_group,
    last_line,
    mariadb_connection,
    pg_connection,
    reap,
    spawn,
)

__all__ = ["DatabaseError", "Dump", "dump_invocation"]

MARIADB_TRAILER = b"-- Dump completed"
PGDUMP_MAGIC = b"PGDMP"


def dump_invocation(source: DatabaseSource, database: str) -> Invocation:
    env = base_environment(source.env)
    if source.kind == "command":
        return Invocation(list(source.command), env)
    if source.kind == "postgresql":
        args, extra = pg_connection(source)
        # -Fc: pg_restore's own format, compressed by vault rather than by pg_dump (a dump
        # compressed by pg_dump changes everywhere when one row changes, and would not
        # deduplicate from night to night).
        return Invocation(
            [
                dump_tool("postgresql"),
                "--format=custom",
                "--compress=0",
                *args,
                "--dbname",
                database,
            ],
            {**env, **extra},
        )
    args, text = mariadb_connection(source)
    return Invocation(
        [
            dump_tool(source.kind),
            *args,
            "--single-transaction",
            "--routines",
            "--triggers",
            "--hex-blob",
            # Its completion line tells a whole dump from a cut one: on, whatever an option
            # file says.
            "--comments",
            # MySQL 8 asks for the PROCESS privilege to dump tablespaces; a practice's
            # database has none of its own.
            "--no-tablespaces",
            "--default-character-set=utf8mb4",
            database,
        ],
        env,
        text,
    )


class Dump:
    """One running dump: `read(n)` gives its output in blocks; `finish()` then says whether it
    is a whole dump (the tool succeeded in time, the output is not empty and, for MariaDB and
    PostgreSQL, looks complete) or raises DatabaseError."""

    def __init__(self, source: DatabaseSource, database: str) -> None:
        self.source, self.database = source, database
        inv = dump_invocation(source, database)
        self.tool = os.path.basename(inv.argv[0])
        self.process = spawn(inv)
        assert self.process.stdout is not None and self.process.stderr is not None
        self._stdout = self.process.stdout
        self._stderr = StderrTail(self.process.stderr)
        self.bytes = 0
        self._head = b""
        self._tail = b""
        # A timer, not a check between reads: a tool that hangs before writing anything (a
        # lock wait, a server-side backup that writes its file first) never returns a read.
        self.timed_out = threading.Event()
        self._watchdog: threading.Timer | None = None
        if source.timeout_seconds:
            self._watchdog = threading.Timer(source.timeout_seconds, self._expire)
            self._watchdog.daemon = True
            self._watchdog.start()

    def _expire(self) -> None:
        self.timed_out.set()
        kill_group(self.process)

    @property
    def label(self) -> str:
        if self.source.kind == "command":
            return f"database {self.source.name} ({self.tool})"
        return f"database {self.source.name}/{self.database} ({self.tool} on {self.source.where()})"

    def read(self, n: int) -> bytes:
        block = self._stdout.read(n) or b""
        if len(self._head) < 16:
            self._head += block[: 16 - len(self._head)]
        if block:
            self._tail = (self._tail + block)[-256:]
        self.bytes += len(block)
        return block

    def close(self) -> None:
        """Stop the tool and its session if they still run (vault itself stopped); never
        raises."""
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self.process.returncode is None:
            kill_group(self.process)
            self.process.wait()
        self._stdout.close()

    def finish(self) -> None:
        self._stdout.close()
        code = reap(self.process)
        if self._watchdog is not None:
            self._watchdog.cancel()
        stderr = self._stderr.join()
        if self.timed_out.is_set():
            raise DatabaseError(
                f"{self.label} did not finish within {self.source.timeout_seconds} s (stopped "
                f"after {self.bytes} bytes)"
            )
        if code != 0:
            why = last_line(stderr)
            raise DatabaseError(
                f"{self.label} {exit_reason(code)} after {self.bytes} bytes"
                + (f": {why}" if why else "")
            )
        if self.bytes == 0:
            raise DatabaseError(f"{self.label} wrote nothing: an empty dump is not a backup")
        kind = self.source.kind
        if kind in ("mariadb", "mysql") and MARIADB_TRAILER not in self._tail:
            raise DatabaseError(
                f"{self.label} ended without its completion line (cut short): the dump is not whole"
            )
        if kind == "postgresql" and not self._head.startswith(PGDUMP_MAGIC):
            raise DatabaseError(f"{self.label} is not in pg_dump's custom format")
