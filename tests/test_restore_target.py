"""The restore target's own guarantees, below the job: a file swapped while the restore runs is
refused when reopened — a symlink, another file, or a FIFO (which must fail at once, not hang)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from vault.jobs.restore.target import Target, UnsafeTarget


@pytest.mark.parametrize("swap", ["fifo", "symlink", "other-file"])
def test_a_file_swapped_during_the_restore_is_refused_on_reopen(
    swap: str, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.write_bytes(b"keep")
    with Target(tmp_path / "target") as target:
        target.make_dir(b"d")
        fd, file_id = target.create_file(b"d/f", 4, overwrite=False)
        os.close(fd)
        victim = tmp_path / "target" / "d" / "f"
        victim.rename(tmp_path / "target" / "d" / "moved-away")
        if swap == "fifo":
            os.mkfifo(victim)
        elif swap == "symlink":
            victim.symlink_to(outside)
        else:
            victim.write_bytes(b"another file")
        outcome: list[BaseException | int] = []

        def reopen() -> None:
            try:
                outcome.append(target.reopen_file(b"d/f", file_id))
            except BaseException as exc:  # the test inspects it
                outcome.append(exc)

        worker = threading.Thread(target=reopen, daemon=True)
        worker.start()
        worker.join(timeout=30)
        assert not worker.is_alive(), "reopening a swapped-in FIFO hung the restore"
        assert isinstance(outcome[0], UnsafeTarget), outcome
    assert outside.read_bytes() == b"keep"


def test_a_hard_link_swapped_in_for_a_restored_symlink_gets_none_of_its_metadata(
    tmp_path: Path,
) -> None:
    from vault.format.tree import SYMLINK, Node

    outside = tmp_path / "outside"
    outside.write_bytes(b"keep")
    before = outside.stat()
    with Target(tmp_path / "target") as target:
        target.symlink(b"link", b"somewhere", overwrite=False)
        link = tmp_path / "target" / "link"
        link.unlink()
        os.link(outside, link)  # what a local user could do before the metadata pass
        node = Node(
            name=b"link", type=SYMLINK, mode=0o777, uid=4242, gid=4242, mtime_ns=0,
            link_target=b"somewhere",
        )
        with pytest.raises(UnsafeTarget, match="was replaced"):
            target.apply_metadata(b"link", node)
    after = outside.stat()
    assert (after.st_uid, after.st_gid, after.st_mtime_ns) == (
        before.st_uid, before.st_gid, before.st_mtime_ns
    )
