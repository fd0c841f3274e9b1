"""A backup saves what it can, names what it could not, and says so in its exit code."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import RunCli
from tests.repos import RepoHandle
from vault.format.chunker import Chunker


def test_unreadable_file_is_reported_and_the_rest_saved_with_exit_3(
    repo: RepoHandle, vault: RunCli, archive: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    victim = archive / "exports" / "pms_dump.bak"
    real_open = os.open

    def failing_open(path: object, flags: int, *args: object, **kwargs: object) -> int:
        if os.fsencode(path) == os.fsencode(victim):  # type: ignore[arg-type]
            raise PermissionError(13, "Permission denied", str(victim))
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    # Root reads any file regardless of mode bits, so the failure is injected at the syscall.
    monkeypatch.setattr(os, "open", failing_open)  # the backup walk opens files with os.open
    result = vault("backup", "-r", repo, archive, "--json")
    monkeypatch.undo()
    assert result.code == 3
    assert str(victim) in result.err
    doc = result.json()
    assert doc["outcome"] == "FAIL"
    assert doc["errors"] == [{"path": str(victim), "reason": "Permission denied"}]
    listing = vault("ls", "-r", repo, "latest", "--json").json()
    paths = {e["path"] for e in listing}
    assert str(victim) not in paths
    assert any(p.endswith(".dcm") for p in paths)


def _grow(path: Path) -> None:
    with open(path, "ab") as handle:
        handle.write(b"late addition\n")


def _shrink(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def _replace(path: Path) -> None:
    fresh = path.with_name(path.name + ".new")
    fresh.write_bytes(b"a new version, written elsewhere and renamed over the old one\n")
    os.replace(fresh, path)


@pytest.mark.parametrize("change", [_grow, _shrink, _replace], ids=["grows", "shrinks", "replaced"])
def test_file_changing_during_read_is_saved_consistently_and_reread_next_time(
    repo: RepoHandle,
    vault: RunCli,
    archive: Path,
    monkeypatch: pytest.MonkeyPatch,
    change: Callable[[Path], None],
) -> None:
    victim = archive / "exports" / "pms_dump.bak"
    before = victim.read_bytes()
    real_chunks = Chunker.chunks

    def chunks_while_someone_writes(
        self: Chunker, read: Callable[[int], bytes], block: int = 1 << 24
    ) -> Iterator[bytes]:
        first = read(block)
        if first.startswith(before[:64]):
            change(victim)  # another program changes the file after its first block was read
        pending = [first]

        def replay(n: int) -> bytes:
            return pending.pop() if pending else read(n)

        yield from real_chunks(self, replay, block)

    monkeypatch.setattr(Chunker, "chunks", chunks_while_someone_writes)
    first = vault("backup", "-r", repo, archive, "--json")
    monkeypatch.undo()
    assert first.code == 0, first.err
    flagged = [p["path"] for p in first.json()["changed_during_read"]]
    target = archive.parent / "first"
    assert vault("restore", "latest", "-r", repo, "--target", target, "--verify").code == 0
    saved = (target / victim.relative_to("/")).read_bytes()
    if change is _replace:
        # The open file is the old inode to its end: a complete, consistent old version.
        assert flagged == [] and saved == before
    else:
        assert "changed while it was being read" in first.err and flagged == [str(victim)]
    second = vault("backup", "-r", repo, archive, "--json").json()
    assert second["stats"]["files_changed"] == 1  # the changed file is read again
    assert second["changed_during_read"] == []
    target = archive.parent / "second"
    assert vault("restore", "latest", "-r", repo, "--target", target, "--verify").code == 0
    assert (target / victim.relative_to("/")).read_bytes() == victim.read_bytes()


def test_missing_source_path_fails_before_writing_anything(
    tmp_path: Path, repo: RepoHandle, vault: RunCli
) -> None:
    result = vault("backup", "-r", repo, tmp_path / "does-not-exist")
    assert result.code == 1
    assert "does-not-exist" in result.err and "does not exist" in result.err
    assert vault("snapshots", "-r", repo, "--json").json() == []


def test_repository_locked_exclusively_exits_11(
    repo: RepoHandle, vault: RunCli, archive: Path
) -> None:
    from tests.conftest import PASSWORD
    from vault.repo.lock import Lock

    r = repo.open(PASSWORD)
    with Lock(r.storage, r.keyring, exclusive=True, operation="prune"):
        result = vault("backup", "-r", repo, archive)
    assert result.code == 11
    assert "locked" in result.err and "prune" in result.err
    assert vault("backup", "-r", repo, archive).code == 0


def test_usage_errors_exit_2(repo: RepoHandle, vault: RunCli) -> None:
    assert vault("restore", "latest", "-r", repo).code == 2  # --target missing
    assert vault("backup", "-r", repo, "/tmp", "--time", "yesterday").code == 2
    assert vault("restore", "nope", "-r", repo, "--target", "/tmp/x").code == 2


def test_a_repository_error_storing_a_small_file_fails_the_backup_not_the_file(
    repo: RepoHandle, vault: RunCli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small chunks are stored by the walk while the file is read, inside the handling of the
    file's own read errors: an OSError of the repository's side must not pass for one (the
    file reported unreadable, the rest saved, a snapshot written without it)."""
    from vault.repo.writer import BlobWriter

    source = tmp_path / "small"
    source.mkdir()
    (source / "note.txt").write_bytes(b"a small file" * 10)
    real_add = BlobWriter.add

    def failing_add(self: BlobWriter, blob_type: object, data: bytes, *args: object) -> bytes:
        if len(data) == 120:
            raise OSError(28, "No space left on device")
        return real_add(self, blob_type, data, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(BlobWriter, "add", failing_add)
    result = vault("backup", "-r", repo, str(source))
    monkeypatch.undo()
    assert result.code not in (0, 3), result.err  # 3 would mean "saved, with unreadable files"
    assert "No space left on device" in result.err and "Traceback" not in result.err
    assert vault("snapshots", "-r", repo, "--json").json() == []
