"""A lost index never becomes lost data: with an index object emptied (as a torn write leaves
it), truncated, deleted or replaced by another repository's, prune, forget --prune and
re-encryption either re-index the packs the snapshots need or stop before deleting anything;
afterwards every snapshot restores byte-identical. On both backends."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.conftest import BOTH_BACKENDS, PASSWORD, RunCli
from tests.repos import RepoHandle
from tests.treecompare import describe_tree
from vault.format import index, sealing

pytestmark = BOTH_BACKENDS


def _archive(tmp_path: Path, vault: RunCli, repo: RepoHandle) -> tuple[Path, list[str]]:
    """Two snapshots of a growing tree, each backup with its own index object."""
    source = tmp_path / "src"
    (source / "a").mkdir(parents=True)
    rng = random.Random(7)
    (source / "a" / "first.bin").write_bytes(rng.randbytes(600_000))
    assert vault("backup", "-r", repo, source).code == 0
    (source / "b").mkdir()
    (source / "b" / "second.bin").write_bytes(rng.randbytes(900_000))
    assert vault("backup", "-r", repo, source).code == 0
    listed = vault("snapshots", "-r", repo, "--json").json()
    return source, [s["id"] for s in sorted(listed, key=lambda s: s["time"])]


def _index_naming_packs(repo: RepoHandle) -> str:
    """The index object of the second backup (it names the packs only that backup wrote)."""
    r = repo.open(PASSWORD)
    sizes = {
        key: len(index.decode(r.open_object(sealing.Kind.INDEX, key), name=key))
        for key in repo.keys("index/")
    }
    return max(sizes, key=lambda k: (sizes[k], k))


def _damage(repo: RepoHandle, key: str, how: str, foreign: bytes) -> None:
    if how == "emptied":
        repo.write(key, b"")
    elif how == "truncated":
        repo.write(key, repo.read(key)[: repo.size(key) // 2])
    elif how == "deleted":
        repo.storage.delete(key)
    elif how == "foreign":
        repo.write(key, foreign)


def _foreign_index(tmp_path: Path, vault: RunCli) -> bytes:
    other = tmp_path / "other-repo"
    assert vault("init", "-r", other).code == 0
    data = tmp_path / "other-data"
    data.mkdir()
    (data / "x.bin").write_bytes(random.Random(1).randbytes(100_000))
    assert vault("backup", "-r", other, data).code == 0
    (key,) = [p for p in (other / "index").iterdir()]
    return key.read_bytes()


def _restores_byte_identical(
    vault: RunCli, repo: RepoHandle, snapshots: list[str], source: Path, tmp_path: Path
) -> None:
    for number, snapshot in enumerate(snapshots):
        out = tmp_path / f"out-{number}"
        done = vault("restore", snapshot, "-r", repo, "--target", out, "--verify")
        assert done.code == 0, done.err
        restored = describe_tree(out / source.relative_to("/"))
        if number == len(snapshots) - 1:
            assert restored == describe_tree(source)
        else:
            assert set(restored) >= {b"a", b"a/first.bin"}


@pytest.mark.parametrize("how", ["emptied", "deleted"])
def test_prune_indexes_again_the_packs_a_lost_index_named(
    how: str, tmp_path: Path, repo: RepoHandle, vault: RunCli
) -> None:
    source, snapshots = _archive(tmp_path, vault, repo)
    packs = set(repo.keys("data/"))
    _damage(repo, _index_naming_packs(repo), how, b"")
    done = vault("prune", "-r", repo, "--json")
    assert done.code == 0, done.err
    doc = done.json()
    assert doc["unindexed_packs_reindexed"] >= 1
    assert doc["unindexed_packs_deleted"] == 0
    assert set(repo.keys("data/")) == packs  # every pack a snapshot needs is still there
    _restores_byte_identical(vault, repo, snapshots, source, tmp_path)
    assert vault("check", "-r", repo, "--read-data").code == 0


@pytest.mark.parametrize("how", ["truncated", "foreign"])
def test_prune_stops_before_deleting_anything_when_an_index_object_cannot_be_read(
    how: str, tmp_path: Path, repo: RepoHandle, vault: RunCli
) -> None:
    source, snapshots = _archive(tmp_path, vault, repo)
    foreign = _foreign_index(tmp_path, vault)
    key = _index_naming_packs(repo)
    _damage(repo, key, how, foreign)
    objects = set(repo.keys())
    done = vault("prune", "-r", repo)
    assert done.code == 1
    assert "stopped before deleting anything" in done.err and key in done.err
    assert "vault repair index" in done.err
    changed = objects ^ set(repo.keys())
    assert all(k.startswith("locks/") for k in changed), changed  # nothing deleted or added
    assert vault("repair", "index", "-r", repo).code == 0
    assert vault("prune", "-r", repo).code == 0
    _restores_byte_identical(vault, repo, snapshots, source, tmp_path)


def test_forget_prune_keeps_what_a_kept_snapshot_needs_when_its_index_is_lost(
    tmp_path: Path, repo: RepoHandle, vault: RunCli
) -> None:
    source, snapshots = _archive(tmp_path, vault, repo)
    _damage(repo, _index_naming_packs(repo), "deleted", b"")
    policy = tmp_path / "keep-last.toml"
    policy.write_text("[retention]\nkeep_last = 1\n")
    done = vault("forget", "-r", repo, "--policy", policy, "--prune")
    assert done.code == 0, done.err
    _restores_byte_identical(vault, repo, snapshots[-1:], source, tmp_path)
    assert vault("check", "-r", repo, "--read-data").code == 0


def test_reencryption_rewrites_the_packs_a_lost_index_named_before_erasing_their_key(
    tmp_path: Path, repo: RepoHandle, vault: RunCli
) -> None:
    source, snapshots = _archive(tmp_path, vault, repo)
    _damage(repo, _index_naming_packs(repo), "deleted", b"")
    done = vault("key", "rotate", "--reencrypt", "-r", repo)
    assert done.code == 0, done.err
    _restores_byte_identical(vault, repo, snapshots, source, tmp_path)
    assert vault("check", "-r", repo, "--read-data").code == 0


def test_a_needed_blob_in_no_pack_stops_prune_with_one_clear_error(
    tmp_path: Path, repo: RepoHandle, vault: RunCli
) -> None:
    _archive(tmp_path, vault, repo)
    key = _index_naming_packs(repo)
    r = repo.open(PASSWORD)
    named = [p.id for p, _ in index.decode(r.open_object(sealing.Kind.INDEX, key), name=key)]
    repo.storage.delete(key)
    for pack_id in named:
        repo.storage.delete(f"data/{pack_id[:2]}/{pack_id}")
    before = set(repo.keys("data/"))
    done = vault("prune", "-r", repo)
    assert done.code == 1
    assert "stopped before deleting anything" in done.err
    assert "vault repair index" in done.err and "Traceback" not in done.err
    assert set(repo.keys("data/")) == before


def test_repair_snapshots_refuses_to_drop_files_that_are_only_unindexed(
    tmp_path: Path, repo: RepoHandle, vault: RunCli
) -> None:
    source, snapshots = _archive(tmp_path, vault, repo)
    _damage(repo, _index_naming_packs(repo), "deleted", b"")
    refused = vault("repair", "snapshots", "-r", repo, "--forget")
    assert refused.code == 2, refused.out + refused.err
    assert "run `vault repair index` first" in refused.err
    listed = vault("snapshots", "-r", repo, "--json").json()
    assert sorted(s["id"] for s in listed) == sorted(snapshots)  # nothing forgotten
    assert vault("repair", "index", "-r", repo).code == 0
    _restores_byte_identical(vault, repo, snapshots, source, tmp_path)
