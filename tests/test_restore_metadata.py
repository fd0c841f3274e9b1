"""A restored file gets its recorded owner, mode and times as its last chunk is written, and only
then: a file with any chunk that could not be written keeps the restore's own mode (owner only)
and today's time, so a tool comparing size, mode and mtime never takes it for good."""

from __future__ import annotations

import os
import stat
import time
from dataclasses import replace
from pathlib import Path

from tests.conftest import PASSWORD, RunCli
from tests.repos import RepoHandle
from vault.format import layout
from vault.format.tree import FILE, Node
from vault.jobs.restore.entries import Entry
from vault.jobs.restore.fetch import write_contents
from vault.jobs.restore.target import Target
from vault.progress import NoProgress
from vault.repo.repository import Repository

OLD_NS = 1_000_000_000 * 1_000_000_000  # 2001-09-09


def _source(tmp_path: Path, names: list[str]) -> Path:
    source = tmp_path / "source"
    source.mkdir()
    for name in names:
        path = source / name
        path.write_bytes(os.urandom(3 << 20))  # several chunks: one can fail alone
        path.chmod(0o640)
        os.utime(path, ns=(OLD_NS, OLD_NS))
    return source


def _opened(repo: RepoHandle) -> Repository:
    opened = repo.open(PASSWORD)
    opened.load_index()
    return opened


def _file_nodes(repo: RepoHandle) -> dict[bytes, Node]:
    opened = _opened(repo)
    stack, found = [opened.snapshots()[-1].tree], {}
    while stack:
        for node in opened.load_tree(stack.pop()).nodes:
            if node.subtree:
                stack.append(node.subtree)
            elif node.type == FILE:
                found[node.name] = node
    return found


def _is_recorded(path: Path) -> bool:
    st = path.stat()
    return stat.S_IMODE(st.st_mode) == 0o640 and st.st_mtime_ns == OLD_NS


def _is_left_fresh(path: Path, started: float) -> bool:
    st = path.stat()
    return stat.S_IMODE(st.st_mode) == 0o600 and st.st_mtime >= started - 1


def test_a_file_whose_chunk_fails_to_open_keeps_the_restores_mode_and_time(
    tmp_path: Path, repo: RepoHandle, vault: RunCli
) -> None:
    source = _source(tmp_path, ["whole.bin", "torn.bin"])
    assert vault("backup", "--repo", repo.url, str(source)).code == 0
    nodes = _file_nodes(repo)
    opened = _opened(repo)
    # Damage the last chunk of torn.bin alone, in place in its pack.
    location = opened.index.lookup(bytes.fromhex(nodes[b"torn.bin"].chunks[-1]))
    assert location is not None
    repo.flip(layout.pack(location.pack.id), location.entry.offset + location.entry.length // 2)
    started = time.time()
    target = tmp_path / "target"
    result = vault("restore", "--repo", repo.url, "latest", "--target", str(target))
    assert result.code != 0
    assert "torn.bin" in result.err + result.out
    restored = target / str(source).lstrip("/")
    assert (restored / "whole.bin").read_bytes() == (source / "whole.bin").read_bytes()
    assert _is_recorded(restored / "whole.bin")
    assert _is_left_fresh(restored / "torn.bin", started)


def test_a_file_with_a_chunk_missing_from_the_index_never_gets_its_metadata(
    tmp_path: Path, repo: RepoHandle, vault: RunCli
) -> None:
    """Its chunks that are in the index are all written, and still it is not complete."""
    source = _source(tmp_path, ["whole.bin"])
    assert vault("backup", "--repo", repo.url, str(source)).code == 0
    node = _file_nodes(repo)[b"whole.bin"]
    missing = replace(node, name=b"missing.bin", chunks=(*node.chunks, "ab" * 32))
    started = time.time()
    with Target(tmp_path / "target") as target:
        fetched = write_contents(
            _opened(repo),
            target,
            [Entry(b"/whole.bin", node), Entry(b"/missing.bin", missing)],
            NoProgress(),
            overwrite=False,
            resume=False,
            metadata=True,
        )
    assert fetched.failed == {1} and fetched.metadata_set == {0}
    assert "not in the index" in fetched.problems[0][1]
    assert _is_recorded(tmp_path / "target" / "whole.bin")
    assert _is_left_fresh(tmp_path / "target" / "missing.bin", started)
