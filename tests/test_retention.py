"""Retention decisions (property-tested against a reference) and `vault forget`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import PASSWORD, RunCli
from tests.repos import RepoHandle
from vault.format.config import ObjectLockPolicy
from vault.jobs.forget import forget
from vault.policy.retention import RetentionPolicy, SnapshotRef, apply
from vault.repo.keys import Secret
from vault.repo.repository import Repository
from vault.storage import MemoryStorage

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


def reference_keep(snaps: list[SnapshotRef], p: RetentionPolicy, now: datetime) -> set[str]:
    """A deliberately different formulation: per rule, the kept set is computed from scratch
    over distinct periods sorted newest first."""
    kept: set[str] = set()
    groups: dict[tuple[str, tuple[str, ...]], list[SnapshotRef]] = {}
    for s in snaps:
        groups.setdefault((s.host, tuple(sorted(s.paths))), []).append(s)
    for group in groups.values():
        ordered = sorted(group, key=lambda s: (s.time, s.id), reverse=True)
        kept |= {s.id for s in ordered[: p.keep_last]}
        for count, period in (
            (p.keep_daily, lambda t: t.strftime("%Y-%m-%d")),
            (p.keep_weekly, lambda t: "{}-{:02d}".format(*t.isocalendar()[:2])),
            (p.keep_monthly, lambda t: t.strftime("%Y-%m")),
            (p.keep_yearly, lambda t: t.strftime("%Y")),
        ):
            newest_per_period: dict[str, SnapshotRef] = {}
            for s in ordered:
                newest_per_period.setdefault(period(s.time), s)
            periods = sorted(newest_per_period, reverse=True)[:count]
            kept |= {newest_per_period[k].id for k in periods}
        kept |= {s.id for s in group if now - s.time < timedelta(days=p.minimum_days)}
        kept |= {s.id for s in group if set(s.tags) & set(p.hold_tags)}
    return kept


snapshot_lists = st.lists(
    st.builds(
        lambda n, minutes, host, tag: SnapshotRef(
            f"{n:064x}",
            NOW - timedelta(minutes=minutes),
            host,
            ("/srv/imaging",),
            (tag,) if tag else (),
        ),
        st.integers(0, 10**9),
        st.integers(1, 3 * 365 * 24 * 60),
        st.sampled_from(["a", "b"]),
        st.sampled_from(["", "", "legal-hold", "nightly"]),
    ),
    max_size=40,
    unique_by=lambda s: s.id,
)
policies = st.builds(
    RetentionPolicy,
    keep_last=st.integers(0, 5),
    keep_daily=st.integers(0, 10),
    keep_weekly=st.integers(0, 6),
    keep_monthly=st.integers(0, 12),
    keep_yearly=st.integers(0, 3),
    minimum_days=st.integers(0, 60),
    hold_tags=st.sampled_from([(), ("legal-hold",)]),
)


@settings(max_examples=300, deadline=None)
@given(snapshot_lists, policies)
def test_retention_matches_the_reference_and_explains_every_keep(
    snaps: list[SnapshotRef], policy: RetentionPolicy
) -> None:
    decisions = apply(snaps, policy, NOW)
    assert sorted(d.snapshot.id for d in decisions) == sorted(s.id for s in snaps)
    assert {d.snapshot.id for d in decisions if d.keep} == reference_keep(snaps, policy, NOW)
    for d in decisions:
        assert d.keep == bool(d.reasons)
        if any(t in policy.hold_tags for t in d.snapshot.tags):
            assert d.keep
        if NOW - d.snapshot.time < timedelta(days=policy.minimum_days):
            assert d.keep


def _backups(vault: RunCli, repo: RepoHandle, source: Path, times: list[str]) -> None:
    for when in times:
        assert vault("backup", "-r", repo, source, "--time", when).code == 0


def test_forget_dry_run_changes_nothing_and_forget_keeps_the_repository_sound(
    tmp_path: Path, repo: RepoHandle, vault: RunCli, archive: Path
) -> None:
    _backups(
        vault, repo, archive, ["2020-01-01 10:00:00", "2020-01-02 10:00:00", "2020-01-03 10:00:00"]
    )
    policy = tmp_path / "retention.toml"
    policy.write_text("[retention]\nkeep_last = 1\n")
    dry = vault("forget", "-r", repo, "--policy", policy, "--dry-run", "--json").json()
    assert [s["keep"] for s in dry["snapshots"]] == [True, False, False]
    assert dry["snapshots"][0]["reasons"] == ["last 1"]
    assert len(vault("snapshots", "-r", repo, "--json").json()) == 3
    done = vault("forget", "-r", repo, "--policy", policy, "--json").json()
    assert len(done["removed"]) == 2
    (left,) = vault("snapshots", "-r", repo, "--json").json()
    assert left["time"].startswith("2020-01-03")
    assert not any(k.endswith(tuple(done["removed"])) for k in repo.keys("catalog/"))
    assert vault("check", "-r", repo, "--read-data").code == 0
    out = tmp_path / "out"
    assert vault("restore", "latest", "-r", repo, "--target", out, "--verify").code == 0


def test_forget_refuses_a_policy_that_keeps_nothing_and_names_bad_keys(
    tmp_path: Path, repo: RepoHandle, vault: RunCli
) -> None:
    empty = tmp_path / "empty.toml"
    empty.write_text("[retention]\nkeep_last = 0\n")
    result = vault("forget", "-r", repo, "--policy", empty)
    assert result.code == 2 and "keeps nothing" in result.err
    bad = tmp_path / "bad.toml"
    bad.write_text("[retention]\nkeep_last = 3\nkeep_dayly = 7\n")
    result = vault("forget", "-r", repo, "--policy", bad)
    assert result.code == 2 and "line 3" in result.err and "keep_dayly" in result.err
    assert vault("forget", "-r", repo).code == 2  # no policy given at all


def test_forget_never_removes_a_snapshot_under_object_lock() -> None:
    storage = MemoryStorage(object_lock=True)
    repo, _ = Repository.init(
        storage, Secret.from_passphrase(PASSWORD), object_lock=ObjectLockPolicy("GOVERNANCE", 30)
    )
    from vault.format.snapshot import Snapshot

    for day in (1, 2, 3):
        snap = Snapshot(
            id=f"{day:064x}",
            time=datetime(2026, 1, day, tzinfo=UTC),
            host="h",
            username="u",
            paths=("/x",),
            tree="00" * 32,
        )
        repo.save_snapshot(snap)
    result = forget(repo, RetentionPolicy(keep_last=1), datetime.now(UTC), dry_run=False)
    assert result.removed == [] and len(result.locked) == 2
    assert len(repo.snapshot_ids()) == 3
    later = datetime.now(UTC) + timedelta(days=31)
    storage._now = lambda: later
    result = forget(repo, RetentionPolicy(keep_last=1), later, dry_run=False)
    assert len(result.removed) == 2 and len(repo.snapshot_ids()) == 1


def test_a_legal_hold_put_on_an_existing_snapshot_keeps_it_until_taken_off(
    tmp_path: Path, vault: RunCli
) -> None:
    repo = tmp_path / "repo"
    assert vault("init", "-r", repo).code == 0
    source = tmp_path / "src"
    source.mkdir()
    for n in range(3):
        (source / f"day{n}").write_text(str(n))
        assert vault("backup", "-r", repo, source, "--time", f"2026-01-0{n + 1} 22:00:00").code == 0
    first = sorted(vault("snapshots", "-r", repo, "--json").json(), key=lambda s: s["time"])[0]
    held = vault("tag", first["id"][:8], "-r", repo, "--add", "legal-hold", "--json")
    assert held.code == 0 and held.json()["tags"] == ["legal-hold"], held.err
    policy = tmp_path / "retention.toml"
    policy.write_text('[retention]\nkeep_last = 1\nhold_tags = ["legal-hold"]\n')
    assert vault("forget", "-r", repo, "--policy", policy).code == 0
    kept = {s["id"] for s in vault("snapshots", "-r", repo, "--json").json()}
    assert first["id"] in kept and len(kept) == 2
    assert vault("check", "-r", repo, "--read-data").code == 0  # the rewritten snapshot is sound
    assert vault("tag", first["id"][:8], "-r", repo, "--remove", "legal-hold").code == 0
    assert vault("forget", "-r", repo, "--policy", policy).code == 0
    assert first["id"] not in {s["id"] for s in vault("snapshots", "-r", repo, "--json").json()}
    actions = [e["action"] for e in vault("audit", "-r", repo, "--json").json()["events"]]
    assert actions.count("tag") == 2
    missing = vault("tag", "latest", "-r", repo, "--remove", "legal-hold")
    assert missing.code == 2 and "has no tag" in missing.err
    assert PASSWORD not in missing.err
