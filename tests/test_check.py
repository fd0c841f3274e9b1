"""`check` finds every kind of damage, names the object and the snapshots it affects — on a
local directory and on a real S3 server alike (bytes are changed through each backend's own
interface, as an attacker or bit rot would)."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from tests.conftest import BOTH_BACKENDS, RunCli
from tests.repos import RepoHandle

pytestmark = BOTH_BACKENDS


def _backup_twice(repo: RepoHandle, vault: RunCli, archive: Path) -> list[str]:
    first = vault("backup", "-r", repo, archive, "--json").json()["snapshot_id"]
    (archive / "new-study.bin").write_bytes(random.Random(5).randbytes(300_000))
    second = vault("backup", "-r", repo, archive, "--json").json()["snapshot_id"]
    return [first, second]


def _name(key: str) -> str:
    return key.rsplit("/", 1)[-1]


def test_clean_repository_passes_full_read(repo: RepoHandle, vault: RunCli, archive: Path) -> None:
    _backup_twice(repo, vault, archive)
    result = vault("check", "-r", repo, "--read-data", "--json")
    assert result.code == 0, result.err
    doc = result.json()
    assert doc["outcome"] == "PASS" and doc["snapshots"] == 2
    assert doc["packs_read"] == doc["packs"] == len(repo.keys("data/"))


@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_flipped_byte_in_a_pack_is_found_by_read_data_naming_pack_and_snapshots(
    repo: RepoHandle, vault: RunCli, archive: Path, where: str
) -> None:
    snaps = _backup_twice(repo, vault, archive)
    pack = repo.largest("data/")
    size = repo.size(pack)
    repo.flip(pack, {"start": 30, "middle": size // 2, "end": size - 2}[where])
    assert vault("check", "-r", repo).code == 0  # structure is intact; only content changed
    result = vault("check", "-r", repo, "--read-data", "--json")
    assert result.code == 1
    findings = result.json()["findings"]
    assert findings and all(_name(pack) in f["object"] for f in findings)
    assert set(findings[0]["snapshots"]) <= set(snaps) and findings[0]["snapshots"]


def test_deleted_pack_is_found_without_reading_data(
    repo: RepoHandle, vault: RunCli, archive: Path
) -> None:
    _backup_twice(repo, vault, archive)
    victim = repo.largest("data/")
    repo.storage.delete(victim)
    result = vault("check", "-r", repo, "--json")
    assert result.code == 1
    findings = result.json()["findings"]
    assert any(_name(victim) in f["object"] and "missing" in f["problem"] for f in findings)


@pytest.mark.parametrize("kind", ["snapshots/", "index/", "keyring", "config"])
def test_flipped_byte_in_metadata_objects_is_detected(
    repo: RepoHandle, vault: RunCli, archive: Path, kind: str
) -> None:
    _backup_twice(repo, vault, archive)
    victim = repo.keys(kind)[0]
    repo.flip(victim, repo.size(victim) // 2)
    result = vault("check", "-r", repo)
    assert result.code == 1
    assert "Traceback" not in result.err
    assert _name(victim) in result.err


def test_snapshot_copied_over_another_is_detected(
    repo: RepoHandle, vault: RunCli, archive: Path
) -> None:
    first, second = _backup_twice(repo, vault, archive)
    repo.write(f"snapshots/{second}", repo.read(f"snapshots/{first}"))
    result = vault("check", "-r", repo, "--json")
    assert result.code == 1
    assert any(second in f["object"] for f in result.json()["findings"])


def test_truncated_pack_is_detected(repo: RepoHandle, vault: RunCli, archive: Path) -> None:
    _backup_twice(repo, vault, archive)
    pack = repo.largest("data/")
    repo.write(pack, repo.read(pack)[: repo.size(pack) // 3])
    structural = vault("check", "-r", repo)  # found from the listing alone, nothing read
    assert structural.code == 1 and "truncated" in structural.err
    assert _name(pack) in structural.err
    result = vault("check", "-r", repo, "--read-data")
    assert result.code == 1
    assert _name(pack) in result.err


def test_restore_names_the_pack_when_a_byte_is_flipped(
    tmp_path: Path, repo: RepoHandle, vault: RunCli, archive: Path
) -> None:
    _backup_twice(repo, vault, archive)
    pack = repo.largest("data/")
    repo.flip(pack, repo.size(pack) // 2)
    result = vault("restore", "latest", "-r", repo, "--target", tmp_path / "out")
    assert result.code == 1
    assert _name(pack) in result.err and "authentication" in result.err


def test_read_data_subsets_rotate_through_every_pack_and_find_damage_once_per_cycle(
    tmp_path: Path, repo: RepoHandle, vault: RunCli
) -> None:
    source = tmp_path / "s"
    source.mkdir()
    rng = random.Random(9)
    for i in range(5):  # incompressible, 5 x 17 MiB: one pack per file or so
        (source / f"f{i}").write_bytes(rng.randbytes(17 * 1024 * 1024))
    vault("backup", "-r", repo, source)
    packs = repo.keys("data/")
    assert len(packs) >= 4
    damaged = repo.largest("data/")  # a data pack: trees are read by every check
    repo.flip(damaged, repo.size(damaged) // 2)

    per_run = math.ceil(len(packs) * 0.25)
    runs = math.ceil(len(packs) / per_run)  # one full cycle
    outcomes = []
    for _ in range(2 * runs):
        doc = vault("check", "-r", repo, "--read-data-subset", "25", "--json").json()
        assert doc["packs_read"] == per_run
        outcomes.append(doc["outcome"])
    # The position is kept between runs: every cycle reads the damaged pack, and only the runs
    # whose share holds it fail (once per cycle, twice when a run wraps round onto it).
    assert "FAIL" in outcomes[:runs] and "FAIL" in outcomes[runs:]
    assert outcomes.count("FAIL") <= 3 and outcomes.count("PASS") >= 2 * runs - 3
    last = vault("status", "-r", repo, "--json").json()["last_check"]
    assert last["outcome"] in ("PASS", "FAIL") and last["all_packs_read"]


def test_packs_read_at_once_report_every_damaged_pack_in_pack_order(
    tmp_path: Path, repo: RepoHandle, vault: RunCli
) -> None:
    source = tmp_path / "s"
    source.mkdir()
    rng = random.Random(11)
    for i in range(6):  # incompressible, one pack each or so
        (source / f"f{i}").write_bytes(rng.randbytes(17 * 1024 * 1024))
    vault("backup", "-r", repo, source)
    packs = sorted(repo.keys("data/"), key=repo.size)[-5:]  # data packs, not the tree pack
    damaged = sorted(rng.sample(packs, 3), key=_name)
    for pack in damaged:
        repo.flip(pack, repo.size(pack) // 2)
    runs = [vault("check", "-r", repo, "--read-data", "--json") for _ in range(2)]
    assert all(run.code == 1 for run in runs)
    docs = [run.json() for run in runs]
    assert docs[0]["findings"] == docs[1]["findings"]  # the same, in the same order
    named = [f["object"] for f in docs[0]["findings"]]
    assert [_name(obj) for obj in dict.fromkeys(named)] == [_name(p) for p in damaged]
    assert docs[0]["packs_read"] == len(repo.keys("data/"))


def test_empty_objects_left_by_a_killed_upload_are_harmless_and_pruned(
    tmp_path: Path, repo: RepoHandle, vault: RunCli, archive: Path
) -> None:
    # Some S3-compatible servers (SeaweedFS) keep an empty object when the uploader is killed
    # mid-PUT. Nothing can refer to it: check passes, backups go on, prune removes it.
    _backup_twice(repo, vault, archive)
    repo.write("index/" + "ee" * 32, b"")
    repo.write("snapshots/" + "dd" * 32, b"")
    result = vault("check", "-r", repo, "--read-data", "--json")
    assert result.code == 0, result.out
    assert len(result.json()["torn_objects"]) == 2
    assert len(vault("snapshots", "-r", repo, "--json").json()) == 2
    assert vault("backup", "-r", repo, archive).code == 0
    assert vault("prune", "-r", repo).code == 0
    assert vault("check", "-r", repo, "--json").json()["torn_objects"] == []
