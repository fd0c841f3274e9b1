"""Chain appends on a server that ignores If-None-Match: the fault proxy strips the header from
every request (and signs the request again, so the server accepts it), so a put-if-absent
silently replaces what is there. vault must notice that by probing and serialise its audit and
drill appends with a lock scoped to the chain, so racing appenders never lose a record."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.conftest import PASSWORD, RunCli, fresh_s3_url
from tests.faultproxy import Fault, FaultProxy
from tests.repos import RepoHandle
from tests.s3server import ADMIN, S3Server
from vault.errors import ObjectExists
from vault.format import layout
from vault.repo import append_guard, audit
from vault.repo.keys import Secret
from vault.repo.repository import Repository
from vault.storage import open_storage

APPENDERS = 3
EACH = 4


def _open_local(repo: RepoHandle) -> Repository:
    return repo.open(PASSWORD)


def _open(url: str) -> Repository:
    # A storage of its own per appender: the probe's answer is cached per storage, and each
    # appender stands for another client.
    return Repository.open(open_storage(url), Secret.from_passphrase(PASSWORD))


def test_the_stripped_header_really_makes_put_if_absent_overwrite(
    proxy: FaultProxy, s3_server: S3Server
) -> None:
    """The scenario is real: through the stripping proxy a second put-if-absent succeeds."""
    url = fresh_s3_url(s3_server)
    storage = open_storage(url)
    storage.put("probe-a", b"one", if_absent=True)
    with pytest.raises(ObjectExists):
        storage.put("probe-a", b"two", if_absent=True)
    proxy.strip_headers({"if-none-match"}, ADMIN)
    storage.put("probe-b", b"one", if_absent=True)
    storage.put("probe-b", b"two", if_absent=True)  # no ObjectExists: the server never knew
    assert storage.get("probe-b") == b"two"
    assert proxy.headers_stripped >= 2


def test_the_probe_tells_an_enforcing_server_from_one_that_ignores_the_condition(
    proxy: FaultProxy, s3_server: S3Server, vault: RunCli
) -> None:
    url = fresh_s3_url(s3_server)
    assert vault("init", "-r", url).code == 0
    assert append_guard.conditional_writes_hold(_open(url))
    proxy.strip_headers({"if-none-match"}, ADMIN)
    stripped = _open(url)
    assert not append_guard.conditional_writes_hold(stripped)
    assert append_guard.capabilities(stripped)["conditional writes"].startswith("no:")
    # The probe leaves nothing behind (its object would otherwise sit among the locks).
    assert not list(stripped.storage.list(layout.LOCKS))


def test_racing_appenders_lose_no_record_when_the_server_ignores_if_none_match(
    proxy: FaultProxy, s3_server: S3Server, vault: RunCli, tmp_path: Path
) -> None:
    url = fresh_s3_url(s3_server)
    assert vault("init", "-r", url).code == 0
    before = len(audit.read_log(_open(url)).events)
    proxy.strip_headers({"if-none-match"}, ADMIN)
    # Every record write is held a moment at the proxy, so an unguarded appender that listed
    # the chain before another's write landed would put the same record number: the window a
    # real race needs, made wide enough to be met every time.
    proxy.inject(Fault("delay", seconds=0.15), times=10_000, method="PUT", path_contains="audit/")
    repos = [_open(url) for _ in range(APPENDERS)]
    start = threading.Barrier(APPENDERS)
    failures: list[BaseException] = []

    def appender(number: int) -> None:
        try:
            start.wait()
            for n in range(EACH):
                audit.record(repos[number], "test-append", result="PASS", target=f"{number}-{n}")
        except BaseException as exc:  # reported below, not lost in the thread
            failures.append(exc)

    threads = [threading.Thread(target=appender, args=(n,)) for n in range(APPENDERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures
    log = audit.read_log(_open(url), verify=True)
    assert log.ok, log.problems
    written = sorted(e.target for e in log.events if e.action == "test-append")
    assert written == sorted(f"{a}-{n}" for a in range(APPENDERS) for n in range(EACH))
    assert len(log.events) == before + APPENDERS * EACH
    # The append locks are gone once the appends are done.
    assert not list(repos[0].storage.list(layout.LOCKS))


def _foreign_append_lock(repo: Repository, *, minutes_old: float) -> str:
    """An append lock written by a client on another host whose clock is `minutes_old` behind
    (or which stopped refreshing that long ago): what a waiting appender meets."""
    import json
    from datetime import UTC, datetime, timedelta

    from vault import ids
    from vault.format import sealing

    lock_id = ids.new_id()
    doc = {
        "version": 1, "host": "another-host", "pid": 4242, "exclusive": True,
        "time": (datetime.now(UTC) - timedelta(minutes=minutes_old)).isoformat(),
        "operation": "audit append", "scope": layout.AUDIT,
    }  # fmt: skip
    blob = sealing.seal(repo.keyring, sealing.Kind.LOCK, lock_id, json.dumps(doc).encode())
    repo.storage.put(layout.lock(lock_id), blob)
    return lock_id


def test_an_append_lock_is_never_judged_stale_by_another_host_s_clock(
    repo: RepoHandle, vault: RunCli
) -> None:
    from datetime import UTC, datetime
    from socket import gethostname

    from vault.repo.lock import list_locks

    opened = _open_local(repo)
    _foreign_append_lock(opened, minutes_old=3)
    (held,) = list_locks(opened.storage, opened.keyring)
    assert held.scope == layout.AUDIT
    assert not held.is_stale(datetime.now(UTC), gethostname())


def test_an_append_lock_that_stops_changing_is_removed_and_the_append_goes_on(
    repo: RepoHandle, vault: RunCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every client takes the append lock once the repository says so; a lock whose holder
    died on another host (never refreshed again) stops blocking after SCOPED_STALE of the
    waiting client's own time (shortened here)."""
    from datetime import timedelta

    from vault.repo import jobstate

    opened = _open_local(repo)
    jobstate.save(opened, jobstate.APPEND_LOCK, {"found": "test"})
    dead = _foreign_append_lock(opened, minutes_old=0)
    monkeypatch.setattr(append_guard, "SCOPED_STALE", timedelta(seconds=0.3))
    event = audit.record(opened, "test-append", result="PASS")
    assert event.seq >= 1
    assert layout.lock(dead) not in repo.keys(layout.LOCKS)
    assert repo.keys(layout.LOCKS) == []


def test_re_encryption_keeps_a_live_append_lock_readable(repo: RepoHandle, vault: RunCli) -> None:
    """The exclusive repository lock of a re-encryption does not exclude appends, so a live
    append lock sealed under the epoch being destroyed is resealed, not deleted."""
    from vault.repo.lock import Lock, list_locks

    opened = _open_local(repo)
    held = Lock(opened.storage, opened.keyring, exclusive=True, operation="t", scope=layout.AUDIT)
    held.acquire()
    try:
        assert vault("key", "rotate", "--reencrypt", "-r", repo).code == 0
        after = _open_local(repo)
        assert [lk.id for lk in list_locks(after.storage, after.keyring)] == [held.id]
    finally:
        held.release()
