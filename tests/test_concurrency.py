"""Concurrent clients: two hosts backing up into one repository at once, exclusive jobs refused
(exit 11) while a backup runs, and locks left behind — by a killed process or by another host —
reported with host and age and removed by `vault unlock` only when stale.

Overlap is made certain, not hoped for: the fault proxy holds the first pack uploads until both
backups hold their locks."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.conftest import PASSWORD, RunCli, fresh_s3_url
from tests.faultproxy import Fault, FaultProxy
from tests.repos import RepoHandle
from tests.s3server import S3Server
from tests.treecompare import describe_tree
from tests.waiting import Changes, wait_until
from vault import ids
from vault.format import layout, sealing
from vault.repo.lock import Lock

MIB = 1024 * 1024


def _backup_process(url: str | Path, source: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "vault", "backup", "-r", str(url), str(source), "--json", *extra],
        env=dict(os.environ, VAULT_PASSWORD=PASSWORD),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _finish(process: subprocess.Popen[bytes]) -> dict[str, object]:
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err.decode()
    return dict(json.loads(out))


def _s3_locks(server: S3Server, url: str) -> list[str]:
    bucket, prefix = url.removeprefix("s3://").split("/", 1)
    listed = server.client().list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/locks/")
    return [o["Key"] for o in listed.get("Contents", [])]


def _tree(root: Path, files: dict[str, bytes]) -> Path:
    root.mkdir(parents=True)
    for name, data in files.items():
        (root / name).write_bytes(data)
    return root


def test_two_hosts_back_up_into_one_repository_at_the_same_time(
    proxy: FaultProxy, s3_server: S3Server, vault: RunCli, tmp_path: Path
) -> None:
    url = fresh_s3_url(s3_server)
    assert vault("init", "-r", url).code == 0
    rng = random.Random(11)
    shared = rng.randbytes(20 * MIB)  # both hosts hold it: both may upload it, neither may lose it
    source_a = _tree(tmp_path / "a", {"shared.raw": shared, "a.raw": rng.randbytes(20 * MIB)})
    source_b = _tree(tmp_path / "b", {"shared.raw": shared, "b.raw": rng.randbytes(20 * MIB)})

    proxy.inject(Fault("delay", seconds=300), times=2, method="PUT", path_contains="/data/")
    first = _backup_process(url, source_a, "--host", "host-a")
    assert wait_until(lambda: proxy.faults_injected >= 1, proxy.changes, timeout=120, process=first)
    second = _backup_process(url, source_b, "--host", "host-b")
    both = wait_until(
        lambda: len(_s3_locks(s3_server, url)) == 2, proxy.changes, timeout=120, process=second
    )
    assert both, "the second backup should run while the first holds its lock"
    proxy.release()
    made = {_finish(first)["snapshot_id"], _finish(second)["snapshot_id"]}

    listed = {s["id"]: s["host"] for s in vault("snapshots", "-r", url, "--json").json()}
    assert set(listed) == made and set(listed.values()) == {"host-a", "host-b"}
    assert vault("check", "-r", url, "--read-data").code == 0
    for host, source in (("host-a", source_a), ("host-b", source_b)):
        snapshot = next(i for i, h in listed.items() if h == host)
        target = tmp_path / f"out-{host}"
        restored = vault("restore", snapshot, "-r", url, "--target", target, "--verify")
        assert restored.code == 0, restored.err
        assert describe_tree(target / source.relative_to("/")) == describe_tree(source)
    assert _s3_locks(s3_server, url) == []


def test_exclusive_jobs_are_refused_while_a_backup_runs(
    proxy: FaultProxy, s3_server: S3Server, vault: RunCli, tmp_path: Path
) -> None:
    url = fresh_s3_url(s3_server)
    assert vault("init", "-r", url).code == 0
    source = _tree(tmp_path / "src", {"scan.raw": random.Random(3).randbytes(20 * MIB)})
    policy = tmp_path / "keep.toml"
    policy.write_text("[retention]\nkeep_last = 1\n")

    proxy.inject(Fault("delay", seconds=300), times=1, method="PUT", path_contains="/data/")
    running = _backup_process(url, source)
    assert wait_until(
        lambda: proxy.faults_injected >= 1, proxy.changes, timeout=120, process=running
    )
    for job in (
        ["prune"],
        ["forget", "--policy", str(policy)],
        ["key", "rotate", "--reencrypt"],
        ["repair", "index"],
        ["repair", "snapshots"],
    ):
        refused = vault(*job, "-r", url)
        assert refused.code == 11, (job, refused.err)
        assert "(backup)" in refused.err and socket.gethostname() in refused.err
        assert "Traceback" not in refused.err
    kept = vault("unlock", "-r", url, "--json")
    assert kept.code == 0 and kept.json()["removed"] == [] and len(kept.json()["kept"]) == 1
    proxy.release()
    _finish(running)
    assert vault("prune", "-r", url).code == 0
    assert vault("check", "-r", url, "--read-data").code == 0


def _foreign_lock(repo: RepoHandle, host: str, age: timedelta) -> str:
    """A lock as another machine's vault writes it: sealed, naming its host, pid and time."""
    opened = repo.open(PASSWORD)
    lock_id = ids.new_id()
    doc = {
        "version": 1,
        "host": host,
        "pid": 4242,
        "exclusive": False,
        "time": (datetime.now(UTC) - age).isoformat(),
        "operation": "backup",
    }
    sealed = sealing.seal(opened.keyring, sealing.Kind.LOCK, lock_id, json.dumps(doc).encode())
    opened.storage.put(layout.lock(lock_id), sealed)
    return lock_id


def _stale_findings(vault: RunCli, repo: RepoHandle) -> list[str]:
    status = vault("status", "-r", repo, "--json").json()
    return [f["message"] for f in status["findings"] if f["topic"] == "locks"]


def test_another_hosts_lock_blocks_until_it_is_stale_and_unlock_removes_only_stale_ones(
    repo: RepoHandle, vault: RunCli, archive: Path
) -> None:
    assert vault("backup", "-r", repo, archive).code == 0
    live = _foreign_lock(repo, "scanner-pc", timedelta(minutes=5))
    blocked = vault("prune", "-r", repo)
    assert blocked.code == 11 and "scanner-pc" in blocked.err and "5 min" in blocked.err
    assert _stale_findings(vault, repo) == []
    kept = vault("unlock", "-r", repo)
    assert kept.code == 0 and "kept live" in kept.out and repo.keys("locks") == [layout.lock(live)]

    repo.storage.delete(layout.lock(live))
    old = _foreign_lock(repo, "scanner-pc", timedelta(minutes=31))
    (finding,) = _stale_findings(vault, repo)
    assert "scanner-pc" in finding and "31 min" in finding and "vault unlock" in finding
    assert vault("prune", "-r", repo).code == 0  # a stale lock blocks nobody
    removed = vault("unlock", "-r", repo)
    assert removed.code == 0 and f"removed shared lock {old[:8]}" in removed.out
    assert "scanner-pc" in removed.out and repo.keys("locks") == []

    forced = _foreign_lock(repo, "scanner-pc", timedelta(seconds=5))
    assert vault("unlock", "-r", repo, "--remove-all").code == 0
    assert layout.lock(forced) not in repo.keys("locks")


def test_a_killed_backups_lock_is_stale_at_once_and_unlock_leaves_live_locks(
    repo: RepoHandle,
    vault: RunCli,
    tmp_path: Path,
    repo_changes: tuple[Changes, dict[str, str]],
) -> None:
    changes, _ = repo_changes
    source = _tree(tmp_path / "src", {"scan.raw": random.Random(4).randbytes(64 * MIB)})
    process = _backup_process(repo, source)
    assert wait_until(lambda: len(repo.keys("locks")) == 1, changes, timeout=120, process=process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    (finding,) = _stale_findings(vault, repo)
    assert socket.gethostname() in finding and f"pid {process.pid}" in finding
    assert vault("prune", "-r", repo).code == 0  # not blocked by the dead process

    opened = repo.open(PASSWORD)
    with Lock(opened.storage, opened.keyring, exclusive=False, operation="check") as live:
        unlocked = vault("unlock", "-r", repo, "--json")
        assert unlocked.code == 0
        assert len(unlocked.json()["removed"]) == 1 and "(backup)" in unlocked.json()["removed"][0]
        assert repo.keys("locks") == [layout.lock(live.id)]
    assert repo.keys("locks") == []


def test_a_lock_the_storage_will_not_let_go_does_not_fail_the_finished_job(
    proxy: FaultProxy, s3_server: S3Server, vault: RunCli, archive: Path
) -> None:
    url = fresh_s3_url(s3_server)
    assert vault("init", "-r", url).code == 0
    proxy.inject(
        Fault("status", status=503, code="ServiceUnavailable"),
        times=10_000,
        method="DELETE",
        path_contains="/locks/",
    )
    backed = vault("backup", "-r", url, archive, "--json")
    assert backed.code == 0, backed.err  # the snapshot is saved: that is what counts
    assert "could not remove lock" in backed.err and "vault unlock" in backed.err
    proxy.clear()
    # The lock, and the probe the audit append made to test conditional writes: both deletes
    # were refused. The probe is no lock and blocks nothing; unlock removes both.
    assert len(_s3_locks(s3_server, url)) == 2
    # Left by this process, which is still alive (in-process CLI): the next job of this host
    # still runs, because a shared lock blocks no shared job; unlock --remove-all clears it.
    assert vault("check", "-r", url).code == 0
    assert vault("unlock", "-r", url, "--remove-all").code == 0
    assert _s3_locks(s3_server, url) == []
