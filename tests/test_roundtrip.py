"""Backup then restore gives back every byte, name, mode, mtime and link."""

from __future__ import annotations

import os
from pathlib import Path

from tests.conftest import BOTH_BACKENDS, PASSWORD, RunCli
from tests.repos import RepoHandle
from tests.treecompare import describe_tree


def make_awkward_tree(root: Path) -> None:
    base = os.fsencode(root)
    os.makedirs(base)
    (root / "with space.txt").write_bytes(b"spaces in the name\n")
    (root / "ünïcødé-名前.dcm").write_bytes(b"unicode name\n" * 100)
    with open(os.path.join(base, b"latin1-\xe9\xff.raw"), "wb") as handle:  # not valid UTF-8
        handle.write(b"bytes that are not UTF-8 in the name")
    os.makedirs(os.path.join(base, b"bad-\xfe-dir"))
    with open(os.path.join(base, b"bad-\xfe-dir", b"inner"), "wb") as handle:
        handle.write(b"inside a directory whose name is not UTF-8")
    deep = root.joinpath(*[f"level{i}" for i in range(30)])
    deep.mkdir(parents=True)
    (deep / "deep.bin").write_bytes(os.urandom(70_000))
    (root / "empty").write_bytes(b"")
    (root / "empty-dir").mkdir()
    (root / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    (root / "zeros.bin").write_bytes(bytes(2 * 1024 * 1024))
    os.symlink("with space.txt", root / "link-to-file")
    os.symlink("/nonexistent/target", root / "dangling-link")
    os.symlink("level0", root / "link-to-dir")
    (root / "exec.sh").write_bytes(b"#!/bin/sh\necho hi\n")
    os.chmod(root / "exec.sh", 0o751)
    os.chmod(root / "with space.txt", 0o604)
    os.chmod(root / "empty-dir", 0o711)
    for i, path in enumerate(sorted(root.rglob("*"))):
        os.utime(
            path,
            ns=(1_600_000_000_123_456_789 + i, 1_600_000_000_123_456_789 + i),
            follow_symlinks=False,
        )


@BOTH_BACKENDS
def test_awkward_tree_round_trips_byte_for_byte(
    tmp_path: Path, repo: RepoHandle, vault: RunCli
) -> None:
    source = tmp_path / "src"
    make_awkward_tree(source)
    backed = vault("backup", "--repo", repo, source)
    assert backed.code == 0, backed.err
    target = tmp_path / "restored"
    restored = vault("restore", "latest", "--repo", repo, "--target", target, "--verify")
    assert restored.code == 0, restored.err
    assert describe_tree(target / source.relative_to("/")) == describe_tree(source)


@BOTH_BACKENDS
def test_sample_dental_archive_round_trips(
    tmp_path: Path, repo: RepoHandle, vault: RunCli, archive: Path
) -> None:
    assert vault("backup", "-r", repo, archive).code == 0
    target = tmp_path / "restored"
    result = vault("restore", "latest", "-r", repo, "--target", target, "--verify", "--json")
    assert result.code == 0, result.err
    doc = result.json()
    assert doc["outcome"] == "PASS"
    assert doc["verified_files"] == doc["files"] > 10
    assert describe_tree(target / archive.relative_to("/")) == describe_tree(archive)


@BOTH_BACKENDS
def test_second_backup_reuses_unchanged_files_without_reading(
    repo: RepoHandle, vault: RunCli, archive: Path
) -> None:
    first = vault("backup", "-r", repo, archive, "--json").json()
    second = vault("backup", "-r", repo, archive, "--json").json()
    assert second["parent"] == first["snapshot_id"]
    assert second["stats"]["bytes_read"] == 0
    assert second["stats"]["files_unchanged"] == first["stats"]["files"]
    assert second["stats"]["bytes_added"] == 0


def test_changed_file_is_read_again_and_only_new_chunks_are_added(
    repo: RepoHandle, vault: RunCli, archive: Path
) -> None:
    vault("backup", "-r", repo, archive)
    victim = next(p for p in sorted(archive.rglob("*.dcm")))
    victim.write_bytes(victim.read_bytes() + b"appended")
    doc = vault("backup", "-r", repo, archive, "--json").json()
    assert doc["stats"]["files_changed"] == 1
    assert doc["stats"]["bytes_read"] == victim.stat().st_size
    assert 0 < doc["stats"]["bytes_added"] <= victim.stat().st_size


@BOTH_BACKENDS
def test_include_restores_only_the_named_subtree(
    tmp_path: Path, repo: RepoHandle, vault: RunCli, archive: Path
) -> None:
    vault("backup", "-r", repo, archive)
    wanted = archive / "exports"
    target = tmp_path / "partial"
    result = vault("restore", "latest", "-r", repo, "--target", target, "--include", wanted)
    assert result.code == 0, result.err
    restored_files = {p.relative_to(target) for p in target.rglob("*") if p.is_file()}
    expected = {p.relative_to("/") for p in wanted.rglob("*") if p.is_file()}
    assert restored_files == expected


def test_restore_refuses_to_overwrite_existing_files_unless_asked(
    tmp_path: Path, repo: RepoHandle, vault: RunCli, archive: Path
) -> None:
    vault("backup", "-r", repo, archive)
    target = tmp_path / "t"
    assert vault("restore", "latest", "-r", repo, "--target", target).code == 0
    restored = target / archive.relative_to("/") / "exports" / "pms_dump.bak"
    restored.write_bytes(b"local edits")
    again = vault("restore", "latest", "-r", repo, "--target", target)
    assert again.code == 2
    assert "--overwrite" in again.err and "Traceback" not in again.err
    assert restored.read_bytes() == b"local edits"
    forced = vault("restore", "latest", "-r", repo, "--target", target, "--overwrite")
    assert forced.code == 0, forced.err
    assert restored.read_bytes() == (archive / "exports" / "pms_dump.bak").read_bytes()


def test_backup_time_option_sets_snapshot_time(
    repo: RepoHandle, vault: RunCli, archive: Path
) -> None:
    vault("backup", "-r", repo, archive, "--time", "2024-03-05 10:20:30", "--tag", "x")
    snaps = vault("snapshots", "-r", repo, "--json").json()
    assert len(snaps) == 1 and snaps[0]["tags"] == ["x"]
    from datetime import datetime

    recorded = datetime.fromisoformat(snaps[0]["time"].replace("Z", "+00:00"))
    assert recorded.astimezone().strftime("%Y-%m-%d %H:%M:%S") == "2024-03-05 10:20:30"


def test_exclude_glob_leaves_matching_files_out(
    repo: RepoHandle, vault: RunCli, archive: Path
) -> None:
    vault("backup", "-r", repo, archive, "--exclude", "*.bak")
    listing = vault("ls", "-r", repo, "latest", "--json").json()
    paths = [entry["path"] for entry in listing]
    assert not any(p.endswith(".bak") for p in paths)
    assert any(p.endswith(".dcm") for p in paths)


def test_local_repository_inside_the_source_is_not_backed_up(tmp_path: Path, vault: RunCli) -> None:
    source = tmp_path / "share"
    source.mkdir()
    (source / "scan.dcm").write_bytes(b"x" * 1000)
    repo = source / "vault-repo"
    assert vault("init", "-r", repo).code == 0
    assert vault("backup", "-r", repo, source).code == 0
    paths = [e["path"] for e in vault("ls", "-r", repo, "latest", "--json").json()]
    assert str(source / "scan.dcm") in paths
    assert not any("vault-repo" in p for p in paths)


def test_unchanged_directories_keep_their_tree_ids_and_changed_ones_do_not(
    tmp_path: Path, repo: RepoHandle, vault: RunCli
) -> None:
    source = tmp_path / "src"
    for name in ("a", "b"):
        (source / name).mkdir(parents=True)
        (source / name / "f.dcm").write_bytes(name.encode() * 5000)
    vault("backup", "-r", repo, source)
    vault("backup", "-r", repo, source)
    (source / "b" / "f.dcm").write_bytes(b"changed" * 5000)
    vault("backup", "-r", repo, source)
    r = repo.open(PASSWORD)
    r.load_index()

    def dirs(snapshot_tree: str) -> dict[str, str]:
        found, stack = {}, [("", snapshot_tree)]
        while stack:
            prefix, tree_id = stack.pop()
            found[prefix or "/"] = tree_id
            for node in r.load_tree(tree_id).nodes:
                if node.type == "dir":
                    stack.append((f"{prefix}/{node.display_name}", node.subtree))
        return found

    first, same, changed = (dirs(s.tree) for s in r.snapshots())
    assert same == first  # nothing changed: every tree reused as it was
    a_key = next(k for k in first if k.endswith("/a"))
    b_key = next(k for k in first if k.endswith("/b"))
    assert changed[a_key] == first[a_key] and changed[b_key] != first[b_key]
    assert changed["/"] != first["/"]
    target = tmp_path / "out"
    assert vault("restore", "latest", "-r", repo, "--target", target, "--verify").code == 0
    assert (target / str(source).lstrip("/") / "b" / "f.dcm").read_bytes() == b"changed" * 5000
