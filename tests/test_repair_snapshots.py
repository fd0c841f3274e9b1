"""`vault repair snapshots`: damaged snapshots get copies holding everything still readable, every
lost file is named (by check and by the repair), and nothing readable is lost on the way."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import PASSWORD, RunCli, fresh_s3_url
from tests.faultproxy import Fault, FaultProxy
from tests.s3server import S3Server
from vault.format.tree import Node
from vault.repo.keys import Secret
from vault.repo.repository import Repository
from vault.storage import LocalStorage

SMALL_PACK = 256 * 1024  # the sample archive spreads over many packs: one lost pack loses a few


@pytest.fixture
def small_pack_repo(tmp_path: Path, vault: RunCli, archive: Path) -> tuple[Path, str]:
    path = tmp_path / "repo"
    Repository.init(LocalStorage(path), Secret.from_passphrase(PASSWORD), pack_size=SMALL_PACK)
    backed = vault("backup", "-r", path, archive, "--json")
    assert backed.code == 0, backed.err
    return path, backed.json()["snapshot_id"]


def _first_chunk(repo_path: Path, archive: Path, name: str) -> tuple[str, int, int]:
    """(pack object, offset, length) of the first chunk of `name`, a file of the archive."""
    repo = Repository.open(LocalStorage(repo_path), Secret.from_passphrase(PASSWORD))
    repo.load_index()
    node = _node(repo, repo.snapshots()[-1].tree, str(archive / name))
    location = repo.index.lookup(bytes.fromhex(node.chunks[0]))
    assert location is not None
    pack = f"data/{location.pack.id[:2]}/{location.pack.id}"
    return pack, location.entry.offset, location.entry.length


def _node(repo: Repository, tree_id: str, path: str) -> Node:
    node = None
    for part in path.strip("/").split("/"):
        node = repo.load_tree(tree_id).get(part.encode())
        assert node is not None
        tree_id = node.subtree
    assert node is not None
    return node


def _files(root: Path) -> dict[str, bytes]:
    return {
        "/" + str(p.relative_to(root)): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink()
    }


def test_a_lost_pack_costs_exactly_the_files_in_it_and_the_rest_is_saved(
    tmp_path: Path, vault: RunCli, archive: Path, small_pack_repo: tuple[Path, str]
) -> None:
    repo, original = small_pack_repo
    victim_file = str(sorted(archive.rglob("*.dcm"))[5].relative_to(archive))  # a CT slice
    pack, _, _ = _first_chunk(repo, archive, victim_file)
    os.remove(repo / pack)

    checked = vault("check", "-r", repo, "--json")
    assert checked.code == 1
    lost = checked.json()["lost"][original]["paths"]
    assert str(archive / victim_file) in lost
    assert len(lost) < len(_files(archive))  # the pack held some files, not all

    dry = vault("repair", "snapshots", "-r", repo, "--dry-run", "--json")
    assert dry.code == 0 and dry.json()["snapshots"][0]["lost_paths"] == lost
    assert len(vault("snapshots", "-r", repo, "--json").json()) == 1  # dry: nothing written

    repaired = vault("repair", "snapshots", "-r", repo, "--json")
    assert repaired.code == 0, repaired.err
    (item,) = repaired.json()["snapshots"]
    assert item["original"] == original and item["lost_paths"] == lost
    listed = {s["id"]: s for s in vault("snapshots", "-r", repo, "--json").json()}
    new = listed[item["new"]]
    assert "repaired" in new["tags"] and new["parent"] == original
    assert original in listed  # kept without --forget

    target = tmp_path / "out"
    restored = vault("restore", item["new"], "-r", repo, "--target", target, "--verify")
    assert restored.code == 0, restored.err
    source_files = {str(archive) + p: data for p, data in _files(archive).items()}
    got = {"/" + p.lstrip("/"): data for p, data in _files(target).items()}
    assert set(got) == set(source_files) - set(lost)
    assert all(got[p] == source_files[p] for p in got)  # everything readable, byte for byte

    # The study catalog of the copy no longer offers the lost file.
    studies = vault("studies", "-r", repo, "--snapshot", item["new"], "--json")
    assert studies.code == 0, studies.err
    assert str(archive / victim_file) not in studies.out

    # Forgetting the original (recorded in the audit log) and pruning leaves a sound repository.
    assert vault("repair", "snapshots", "-r", repo, item["new"]).code == 0  # nothing to do
    forget = vault("repair", "snapshots", "-r", repo, "--forget", "--json")
    assert forget.code == 0 and forget.json()["forgotten"] == [original]
    (again,) = forget.json()["snapshots"]
    assert again["made_earlier"] and again["new"] == item["new"]  # no second copy
    assert vault("prune", "-r", repo).code == 0
    final = vault("check", "-r", repo, "--read-data", "--json")
    assert final.code == 0, final.out
    assert [s["id"] for s in vault("snapshots", "-r", repo, "--json").json()] == [item["new"]]


def test_a_flipped_byte_inside_a_pack_is_found_with_read_data(
    tmp_path: Path, vault: RunCli, archive: Path, small_pack_repo: tuple[Path, str]
) -> None:
    repo, original = small_pack_repo
    victim_file = "exports/pms_dump.bak"
    name, offset, length = _first_chunk(repo, archive, victim_file)
    pack = repo / name
    data = bytearray(pack.read_bytes())
    data[offset + length // 2] ^= 0x40  # inside that file's first chunk
    pack.write_bytes(bytes(data))

    structural = vault("repair", "snapshots", "-r", repo, "--json")
    assert structural.code == 0 and structural.json()["snapshots"] == []  # content only
    repaired = vault("repair", "snapshots", "-r", repo, "--read-data", "--json")
    assert repaired.code == 0, repaired.err
    (item,) = repaired.json()["snapshots"]
    assert item["original"] == original and item["lost_files"] >= 1 and item["new"]
    assert item["lost_paths"] == [str(archive / victim_file)]  # that file, no other
    target = tmp_path / "out"
    restored = vault("restore", item["new"], "-r", repo, "--target", target, "--verify")
    assert restored.code == 0, restored.err
    source_files = {str(archive) + p: d for p, d in _files(archive).items()}
    got = {"/" + p.lstrip("/"): d for p, d in _files(target).items()}
    assert set(got) == set(source_files) - set(item["lost_paths"])
    assert all(got[p] == source_files[p] for p in got)


@pytest.mark.parametrize(
    ("job", "path"),
    [
        (("check",), "/catalog/"),
        (("check", "--read-data"), "/data/"),
        (("check",), "/audit/"),
        (("repair", "snapshots", "--read-data"), "/data/"),
        (("repair", "index"), "/data/"),
    ],
    ids=["check-catalogs", "check-read-data", "check-audit", "repair-snapshots", "repair-index"],
)
def test_an_outage_is_never_reported_or_repaired_as_damage(
    proxy: FaultProxy,
    s3_server: S3Server,
    vault: RunCli,
    archive: Path,
    job: tuple[str, ...],
    path: str,
) -> None:
    url = fresh_s3_url(s3_server)
    assert vault("init", "-r", url).code == 0
    assert vault("backup", "-r", url, archive).code == 0
    before = vault("snapshots", "-r", url, "--json").json()
    index_before = sorted(o["Key"] for o in _listed(s3_server, url, "index/"))
    proxy.inject(
        Fault("status", status=503, code="ServiceUnavailable"),
        times=10_000,
        method="GET",
        path_contains=path,
    )
    failed = vault(*job, "-r", url)
    proxy.clear()
    errors = [line for line in failed.err.splitlines() if not line.startswith("vault: warning:")]
    assert failed.code == 1 and len(errors) == 1 and "server error 503" in errors[0], failed.err
    assert "can no longer restore" not in failed.err + failed.out
    assert vault("snapshots", "-r", url, "--json").json() == before  # nothing written
    assert sorted(o["Key"] for o in _listed(s3_server, url, "index/")) == index_before
    assert vault("check", "-r", url, "--read-data").code == 0


def _listed(server: S3Server, url: str, prefix: str) -> list[dict[str, object]]:
    bucket, root = url.removeprefix("s3://").split("/", 1)
    found = server.client().list_objects_v2(Bucket=bucket, Prefix=f"{root}/{prefix}")
    return list(found.get("Contents", []))
