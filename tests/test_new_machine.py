"""The day the server dies: a new machine with nothing but the bucket's credentials and the
recovery key from the safe restores the whole archive from S3 in priority order, then checks
the repository and runs a drill that compares fresh restores with the restored tree. No local
state, cache, config or passphrase from the old machine: a fresh, empty home directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, RunCli, sample_archive
from tests.repos import RepoHandle
from tests.treecompare import describe_tree

pytestmark = pytest.mark.parametrize("empty_repo", ["s3"], indirect=True)


def _on_new_machine(home: Path, repo: RepoHandle, *args: str | Path) -> dict[str, Any]:
    """Run vault as the admin on the new machine would (docs/disaster-recovery.md, step 2): a
    login shell's PATH, a fresh HOME, the bucket credentials and endpoint, the repository and
    the recovery key file, and nothing else of vault's."""
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "LANG": "C.UTF-8",
        **repo.env,
        "VAULT_REPO": repo.url,
        "VAULT_PASSWORD_FILE": str(home / "recovery.txt"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "vault", *map(str, args)],
        env=env, cwd=home, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    return {"code": done.returncode, "out": done.stdout, "err": done.stderr}


def test_a_new_machine_restores_the_archive_with_only_the_bucket_and_the_recovery_key(
    tmp_path: Path, empty_repo: RepoHandle, vault: RunCli
) -> None:
    # The old server: its archive, a practice-management dump, and the nightly backup.
    server = tmp_path / "old-server" / "srv"
    sample_archive.generate(server / "imaging-share", seed=5, scale=0.3)
    (server / "pms-export").mkdir()
    (server / "pms-export" / "practice.sql").write_bytes(os.urandom(256 * 1024))
    safe = tmp_path / "practice-safe"
    safe.mkdir()
    recovery = safe / "recovery-key.txt"
    assert vault("init", "-r", empty_repo, "--recovery-key-file", recovery).code == 0
    assert vault("backup", "-r", empty_repo, server).code == 0
    recovery_key = recovery.read_text().strip()

    # The new machine: an empty home, the recovery key (read from the printout into a file).
    home = tmp_path / "new-machine" / "home"
    home.mkdir(parents=True)
    key_file = home / "recovery.txt"
    key_file.write_text(recovery_key + "\n")
    key_file.chmod(0o600)
    target = tmp_path / "new-machine" / "restore"
    repo: tuple[str, ...] = ()

    priority = ("--priority", ROOT / "policies" / "restore.toml")
    dry = _on_new_machine(home, empty_repo, "restore", "latest", *repo, "--target", target,
                          *priority, "--dry-run", "--json")  # fmt: skip
    assert dry["code"] == 0, dry["err"]
    planned = json.loads(dry["out"])["tiers"]
    # The dump and the archive's own exported .bak come first.
    assert planned[0]["name"] == "practice database" and planned[0]["files"] == 2
    assert not target.exists()

    run = _on_new_machine(home, empty_repo, "restore", "latest", *repo, "--target", target,
                          *priority, "--json")  # fmt: skip
    assert run["code"] == 0, run["err"]
    doc = json.loads(run["out"])
    assert [t["name"] for t in doc["tiers"]] == [t["name"] for t in planned]
    assert [t["files"] for t in doc["tiers"]] == [t["files"] for t in planned]
    assert all(t["outcome"] == "PASS" and t["verified_files"] == t["files"] for t in doc["tiers"])
    assert describe_tree(target / server.relative_to("/")) == describe_tree(server)
    # Opening with the recovery key is break-glass, and says so.
    assert "RECOVERY KEY" in run["err"]

    check = _on_new_machine(home, empty_repo, "check", *repo, "--read-data", "--json")
    assert check["code"] == 0, check["err"]
    drill = _on_new_machine(home, empty_repo, "drill", *repo, "--compare-source",
                            "--source-root", target, "--json")  # fmt: skip
    assert drill["code"] == 0, drill["err"] + drill["out"]
    record = json.loads(drill["out"])
    assert record["compared_with"] == "a restored tree"
    compared = [i["source_comparison"] for i in record["items"]]
    assert compared and all(set(c) == {"PASS"} for c in compared)

    # Step 7: the new machine's own passphrase, and the break-glass open acknowledged.
    passphrase = home / "passphrase"
    passphrase.write_text("a new long passphrase for the new imaging server\n")
    passphrase.chmod(0o600)
    added = _on_new_machine(home, empty_repo, "key", "add", "--new-password-file", passphrase,
                            "--name", "new imaging server")  # fmt: skip
    assert added["code"] == 0, added["err"]
    # From here on the new passphrase, not the recovery key: acknowledging with the recovery
    # key would be one more break-glass open.
    (home / "recovery.txt").rename(home / "recovery.txt.safe")
    (home / "recovery.txt").symlink_to(passphrase)
    status = json.loads(_on_new_machine(home, empty_repo, "status", "--json")["out"])
    pending = [f for f in status["findings"] if "RECOVERY KEY" in f["message"]]
    assert len(pending) >= 4, "every break-glass open shows in status until acknowledged"
    done = _on_new_machine(home, empty_repo, "audit", "--acknowledge", "all", "--note",
                           "disaster recovery on a new server")  # fmt: skip
    assert done["code"] == 0, done["err"]
    status = json.loads(_on_new_machine(home, empty_repo, "status", "--json")["out"])
    assert not any("RECOVERY KEY" in f["message"] for f in status["findings"])

    # The recovery key never appears in anything vault printed on the new machine.
    for output in (dry, run, check, drill, added):
        assert recovery_key not in output["out"] + output["err"]
    # And nothing of the old machine was needed: vault's own state is all the new home holds.
    made = {p.name for p in home.iterdir()} - {"recovery.txt", "recovery.txt.safe", "passphrase"}
    assert made <= {".local", ".cache", ".config"}, made
