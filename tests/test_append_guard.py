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
from tests.s3server import ADMIN, S3Server
from vault.errors import ObjectExists
from vault.format import layout
from vault.repo import append_guard, audit
from vault.repo.keys import Secret
from vault.repo.repository import Repository
from vault.storage import open_storage

APPENDERS = 3
EACH = 4


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
