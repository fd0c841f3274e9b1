"""Every kind of object, every kind of damage: a flipped byte, truncation, deletion, and
substitution (another valid object of the repository copied over it). `check` must find each
one and name the object — where only content changed, `check --read-data` must — and never
print a traceback. The few cells that are not damage (state vault rewrites anyway) are listed
with the reason and must pass.

One repository is built per module (snapshots, a forgotten snapshot, drills, a check, two key
slots, audit events) and copied for each of the ~50 cells, so the matrix runs in seconds."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import PASSWORD, ROOT, RunCli
from vault.format import layout
from vault.repo.keys import Secret
from vault.repo.repository import Repository
from vault.storage import LocalStorage


@dataclass(frozen=True)
class Template:
    path: Path
    snapshots: list[str]  # oldest first, as listed after the forget
    recovery_slot: str
    passphrase_slot: str


def _run(env: dict[str, str], *args: str | Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "vault", *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, archive_template: Path) -> Template:
    return build_template(tmp_path_factory.mktemp("corruption"), archive_template)


def build_template(work: Path, archive_template: Path) -> Template:
    """A repository with two snapshots (a third forgotten), two drills, a check and two key
    slots (also used by scripts/fault_campaign.py)."""
    source = work / "archive"
    shutil.copytree(archive_template, source, symlinks=True)
    repo = work / "repo"
    env = dict(os.environ, VAULT_PASSWORD=PASSWORD, VAULT_TEST_FAST_KDF="1")
    _run(env, "init", "-r", repo)
    for n in range(3):
        (source / f"added-{n}.bin").write_bytes(os.urandom(200_000))
        _run(env, "backup", "-r", repo, source, "--quiet")
    policy = work / "keep.toml"
    policy.write_text("[retention]\nkeep_last = 2\n")
    _run(env, "forget", "-r", repo, "--policy", policy)  # forgotten by vault: not "missing"
    for _ in range(2):
        _run(env, "drill", "-r", repo, "--sample", "2", "--record-dir", work / "records")
    _run(env, "check", "-r", repo)
    listed = json.loads(_run(env, "snapshots", "-r", repo, "--json"))
    opened = Repository.open(LocalStorage(repo), Secret.from_passphrase(PASSWORD))
    slots = {s.kind: s.id for s in opened.slots()}
    return Template(repo, [s["id"] for s in listed], slots["recovery"], slots["passphrase"])


def _tree_pack(repo: Repository, snapshot_id: str) -> str:
    root = repo.load_snapshot(snapshot_id).tree
    location = repo.index.lookup(bytes.fromhex(root))
    assert location is not None
    return layout.pack(location.pack.id)


# Which object of a kind is damaged, and which other valid object is copied over it.
Pick = Callable[[Repository, Template], tuple[str, str]]


def _first_two(prefix: str) -> Pick:
    def pick(repo: Repository, t: Template) -> tuple[str, str]:
        keys = sorted(i.key for i in repo.storage.list(prefix))
        return keys[0], keys[1]

    return pick


def _data_pack(repo: Repository, t: Template) -> tuple[str, str]:
    trees = {_tree_pack(repo, s) for s in t.snapshots}
    data = sorted((i.size, i.key) for i in repo.storage.list(layout.DATA) if i.key not in trees)
    return data[-1][1], data[-2][1]


def _tree_pack_pick(repo: Repository, t: Template) -> tuple[str, str]:
    victim = _tree_pack(repo, t.snapshots[-1])
    other = next(i.key for i in repo.storage.list(layout.DATA) if i.key != victim)
    return victim, other


def _snapshot(repo: Repository, t: Template) -> tuple[str, str]:
    return layout.snapshot(t.snapshots[-1]), layout.snapshot(t.snapshots[0])


def _catalog(repo: Repository, t: Template) -> tuple[str, str]:
    return layout.catalog(t.snapshots[-1]), layout.catalog(t.snapshots[0])


def _key_slot(repo: Repository, t: Template) -> tuple[str, str]:
    return layout.key_slot(t.recovery_slot), layout.key_slot(t.passphrase_slot)


def _slot_info(repo: Repository, t: Template) -> tuple[str, str]:
    return layout.slot_info(t.recovery_slot), layout.slot_info(t.passphrase_slot)


def _singleton(name: str, other: str) -> Pick:
    return lambda repo, t: (name, other)


KINDS: dict[str, Pick] = {
    "data-pack": _data_pack,
    "tree-pack": _tree_pack_pick,
    "index": _first_two(layout.INDEX),
    "snapshot": _snapshot,
    "catalog": _catalog,
    "audit-event": _first_two(layout.AUDIT),
    "drill-record": _first_two(layout.DRILLS),
    "key-slot": _key_slot,
    "slot-info": _slot_info,
    "check-state": lambda repo, t: (layout.state("check"), layout.slot_info(t.passphrase_slot)),
    "keyring": _singleton(layout.KEYRING, layout.CONFIG),
    "config": _singleton(layout.CONFIG, layout.KEYRING),
    "version": _singleton(layout.VERSION, layout.CONFIG),
}
DAMAGES = ("flip", "truncate", "delete", "substitute")

# Cells that are not damage, and why; they must pass check.
NOT_DAMAGE = {
    ("check-state", "delete"): "the last check's position: the next check starts over",
}
# Damage to these keeps a repository from opening at all: the error must name the object.
UNOPENABLE = {"keyring", "config", "version"}


def names_it(kind: str, how: str, victim: str, output: str) -> bool:
    """Whether check's output names the damaged object (in the form check can know it)."""
    name = victim.rsplit("/", 1)[-1]
    if kind in ("audit-event", "drill-record"):
        name = str(int(name))  # chains name records by number
    if kind == "index" and how in ("delete", "truncate") and name not in output:
        # A deleted index object's name is gone with it (and one truncated to nothing looks
        # like an interrupted upload): check names what it indexed and points at the repair
        # that rebuilds the index from the packs.
        return "vault repair index" in output
    return name in output


def damage(
    storage: LocalStorage, victim: str, other: str, how: str, rng: random.Random | None = None
) -> None:
    """Damage `victim`: in the middle (or, given `rng`, anywhere — header, body or trailer)."""
    data = storage.get(victim)
    if how == "flip":
        changed = bytearray(data)
        at = rng.randrange(len(data)) if rng else len(data) // 2
        changed[at] ^= 1 << (rng.randrange(8) if rng else 0)
        storage.put(victim, bytes(changed))
    elif how == "truncate":
        storage.put(victim, data[: rng.randrange(len(data)) if rng else len(data) // 3])
    elif how == "delete":
        storage.delete(victim)
    else:
        storage.put(victim, storage.get(other))


@pytest.mark.parametrize("how", DAMAGES)
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_check_finds_and_names_every_kind_of_damage(
    template: Template, tmp_path: Path, vault: RunCli, kind: str, how: str
) -> None:
    path = tmp_path / "repo"
    shutil.copytree(template.path, path)
    storage = LocalStorage(path)
    opened = Repository.open(storage, Secret.from_passphrase(PASSWORD))
    opened.load_index()
    victim, other = KINDS[kind](opened, template)
    damage(storage, victim, other, how)

    plain = vault("check", "-r", path)
    full = vault("check", "-r", path, "--read-data") if plain.code == 0 else plain
    for result in (plain, full):
        assert "Traceback" not in result.err
    if (kind, how) in NOT_DAMAGE:
        assert full.code == 0, full.err
        return
    assert full.code != 0, f"{how} of {victim} went unnoticed"
    assert names_it(kind, how, victim, full.out + full.err), full.err
    if kind in UNOPENABLE:
        assert full.code in (1, 10), full.err
        assert len(full.err.strip().splitlines()) == 1
