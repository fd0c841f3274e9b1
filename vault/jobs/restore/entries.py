"""What a restore walks: the entries of a snapshot's trees, parents before children."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from vault.format.paths import display, is_safe_name
from vault.format.snapshot import Snapshot
from vault.format.tree import DIR, Node
from vault.repo.repository import Repository


@dataclass(frozen=True)
class Entry:
    path: bytes  # snapshot path, absolute
    node: Node

    @property
    def rel(self) -> bytes:
        """The path below the target (snapshot paths are absolute)."""
        return self.path[1:]


def walk(
    repo: Repository,
    snapshot: Snapshot,
    problems: list[tuple[str, str]],
    descend: Callable[[bytes], bool] = lambda path: True,
) -> Iterator[Entry]:
    """Every entry of a snapshot, parents before children; unsafe names reported and skipped.
    Directories for which `descend` is false are listed but not entered (their trees are not
    even fetched: restoring one study does not read the whole archive's metadata)."""
    stack: list[tuple[bytes, str]] = [(b"", snapshot.tree)]
    while stack:
        prefix, tree_id = stack.pop()
        for node in repo.load_tree(tree_id).nodes:
            if not is_safe_name(node.name):
                problems.append(
                    (
                        display(prefix + b"/" + node.name),
                        "refused: name would escape the target directory",
                    )
                )
                continue
            path = prefix + b"/" + node.name
            yield Entry(path, node)
            if node.type == DIR and node.subtree and descend(path):
                stack.append((path, node.subtree))
