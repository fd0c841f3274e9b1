"""Walking a snapshot reads each tree pack once, not one request per directory, and a
damaged tree pack is still found and named."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import BOTH_BACKENDS, PASSWORD, RunCli
from tests.repos import RepoHandle
from vault.errors import IntegrityError
from vault.jobs.restore.entries import walk
from vault.repo.keys import Secret
from vault.repo.repository import Repository
from vault.storage import CountingStorage


def _deep_source(root: Path) -> Path:
    for i in range(40):  # 40 patient folders with a study folder each: 80 trees and more
        study = root / f"patient{i:03d}" / "study"
        study.mkdir(parents=True)
        (study / "IMG0001.dcm").write_bytes(bytes([i]) * 1000)
    return root


@BOTH_BACKENDS
def test_walking_all_trees_costs_one_get_per_tree_pack(
    tmp_path: Path, repo: RepoHandle, vault: RunCli
) -> None:
    vault("backup", "-r", repo, _deep_source(tmp_path / "src"))
    plain = repo.open(PASSWORD)
    plain.load_index()
    tree_packs = {loc.pack.id for loc in plain.index if loc.entry.type.name == "TREE"}
    counting = CountingStorage(repo.storage)
    opened = Repository.open(counting, Secret.from_passphrase(PASSWORD))
    opened.load_index()
    snapshot = opened.snapshots()[-1]
    before = counting.calls["get"]
    entries = list(walk(opened, snapshot, []))
    assert len([e for e in entries if e.node.type == "dir"]) > 80
    assert counting.calls["get"] - before == len(tree_packs) <= 2


def test_a_flipped_byte_in_a_tree_pack_still_fails_authentication(
    tmp_path: Path, repo: RepoHandle, vault: RunCli
) -> None:
    vault("backup", "-r", repo, _deep_source(tmp_path / "src"))
    r = repo.open(PASSWORD)
    r.load_index()
    tree_pack = next(loc.pack.id for loc in r.index if loc.entry.type.name == "TREE")
    key = f"data/{tree_pack[:2]}/{tree_pack}"
    repo.flip(key, 100)
    fresh = repo.open(PASSWORD)
    fresh.load_index()
    with pytest.raises(IntegrityError, match=tree_pack):
        list(walk(fresh, fresh.snapshots()[-1], []))
