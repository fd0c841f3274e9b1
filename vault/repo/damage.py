"""Which files of a snapshot can no longer be restored, and the snapshot's trees without them.

Given a test for whether a blob can still be read (indexed, its pack present and long enough,
and — after a read-data check — its bytes authenticated), `salvage` walks a snapshot's trees
children first and drops every file with an unreadable chunk and every directory whose own
listing is unreadable. `check` uses it (writing nothing) to name the files a damaged snapshot
has lost; `vault repair snapshots` uses it to write the trees of a new snapshot that restores
everything still readable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from vault.errors import DAMAGE
from vault.format.paths import display
from vault.format.tree import DIR, FILE, Node, Tree
from vault.repo.repository import Repository

Usable = Callable[[bytes], bool]


@dataclass
class Salvage:
    tree: str  # the salvaged root tree ("" when everything is lost, or a dry run changed it)
    lost: list[str] = field(default_factory=list)  # paths; directories end with "/"
    lost_bytes: int = 0  # of the lost files (a lost directory's size is unknown)

    @property
    def lost_files(self) -> int:
        return sum(1 for path in self.lost if not path.endswith("/"))

    @property
    def everything(self) -> bool:
        """The root tree itself is unreadable: nothing can be saved."""
        return self.lost == ["/"]


@dataclass
class _Frame:
    prefix: bytes
    tree_id: str
    nodes: tuple[Node, ...]
    position: int = 0
    kept: list[Node] = field(default_factory=list)
    changed: bool = False


def _open(repo: Repository, tree_id: str, usable: Usable) -> Tree | None:
    if not usable(bytes.fromhex(tree_id)):
        return None
    try:
        return repo.load_tree(tree_id)
    except DAMAGE:
        return None


def salvage(
    repo: Repository, root_id: str, usable: Usable, write: Callable[[Tree], str] | None = None
) -> Salvage:
    """The root of a tree holding everything under `root_id` that can still be read. Trees
    that lost nothing keep their ids; changed ones are written with `write` (without it, a dry
    run: only `lost` is meaningful). Iterative, children before parents."""
    result = Salvage(root_id)
    root = _open(repo, root_id, usable)
    if root is None:
        result.tree, result.lost = "", ["/"]
        return result
    stack = [_Frame(b"", root_id, root.nodes)]
    while stack:
        frame = stack[-1]
        if frame.position == len(frame.nodes):
            stack.pop()
            tree_id = frame.tree_id
            if frame.changed:
                tree_id = write(Tree(tuple(frame.kept))) if write is not None else ""
            if not stack:
                result.tree = tree_id
                break
            parent = stack[-1]
            node = parent.nodes[parent.position]
            parent.position += 1
            parent.kept.append(replace(node, subtree=tree_id) if frame.changed else node)
            parent.changed |= frame.changed
            continue
        node = frame.nodes[frame.position]
        path = frame.prefix + b"/" + node.name
        if node.type == DIR and node.subtree:
            subtree = _open(repo, node.subtree, usable)
            if subtree is not None:
                stack.append(_Frame(path, node.subtree, subtree.nodes))
                continue  # this frame moves on when the child's frame is done
            result.lost.append(display(path) + "/")
            frame.changed = True
        elif node.type == FILE and not all(usable(bytes.fromhex(c)) for c in node.chunks):
            result.lost.append(display(path))
            result.lost_bytes += node.size
            frame.changed = True
        else:
            frame.kept.append(node)
        frame.position += 1
    return result
