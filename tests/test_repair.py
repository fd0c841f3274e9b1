"""`vault repair index` brings back a deleted, damaged or tampered index from the packs'
sealed trailers, and names the packs it cannot read."""

from __future__ import annotations

import random
from pathlib import Path

from tests.conftest import BOTH_BACKENDS, RunCli
from tests.repos import RepoHandle
from tests.treecompare import describe_tree


def _two_backups(repo: RepoHandle, vault: RunCli, archive: Path) -> None:
    assert vault("backup", "-r", repo, archive).code == 0
    (archive / "later.bin").write_bytes(random.Random(8).randbytes(200_000))
    assert vault("backup", "-r", repo, archive).code == 0


def _restores_everything(tmp_path: Path, repo: RepoHandle, vault: RunCli, archive: Path) -> None:
    assert vault("check", "-r", repo, "--read-data").code == 0
    target = tmp_path / "out"
    assert vault("restore", "latest", "-r", repo, "--target", target, "--verify").code == 0
    assert describe_tree(target / str(archive).lstrip("/")) == describe_tree(archive)


@BOTH_BACKENDS
def test_every_index_object_deleted_then_rebuilt(
    tmp_path: Path, repo: RepoHandle, vault: RunCli, archive: Path
) -> None:
    _two_backups(repo, vault, archive)
    packs = repo.keys("data/")
    for key in repo.keys("index/"):
        repo.storage.delete(key)
    broken = vault("check", "-r", repo)
    assert broken.code == 1
    repaired = vault("repair", "index", "-r", repo, "--json")
    assert repaired.code == 0, repaired.err
    doc = repaired.json()
    assert doc["packs"] == len(packs) and len(doc["previously_unindexed_packs"]) == len(packs)
    assert doc["unreadable_packs"] == [] and len(repo.keys("index/")) == 1
    _restores_everything(tmp_path, repo, vault, archive)


def test_a_tampered_index_object_is_replaced(
    tmp_path: Path, repo: RepoHandle, vault: RunCli, archive: Path
) -> None:
    _two_backups(repo, vault, archive)
    damaged = repo.keys("index/")[0]
    repo.flip(damaged, repo.size(damaged) // 2)
    failing = vault("check", "-r", repo)
    assert failing.code == 1 and damaged.rsplit("/", 1)[-1][:16] in failing.err + failing.out
    dry = vault("repair", "index", "-r", repo, "--dry-run", "--json").json()
    assert dry["dry_run"] and damaged in repo.keys("index/")  # nothing changed
    assert vault("repair", "index", "-r", repo).code == 0
    assert damaged not in repo.keys("index/")
    _restores_everything(tmp_path, repo, vault, archive)


def test_a_pack_with_a_damaged_trailer_is_named_and_check_says_what_it_costs(
    repo: RepoHandle, vault: RunCli, archive: Path
) -> None:
    _two_backups(repo, vault, archive)
    pack = repo.largest("data/")
    repo.flip(pack, repo.size(pack) - 10)  # inside the sealed trailer
    result = vault("repair", "index", "-r", repo, "--json")
    assert result.code == 1
    doc = result.json()
    assert [u["object"] for u in doc["unreadable_packs"]] == [pack]
    assert "trailer failed authentication" in doc["unreadable_packs"][0]["problem"]
    checked = vault("check", "-r", repo, "--json")
    assert checked.code == 1
    assert any(f["snapshots"] for f in checked.json()["findings"])


def test_repair_help_says_when_to_use_it(vault: RunCli) -> None:
    result = vault("repair", "index", "--help")
    assert result.code == 0 and "trailer" in result.out
