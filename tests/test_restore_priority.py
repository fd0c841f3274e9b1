"""A disaster restore in priority order (restore.toml): each tier complete, verified and with
its metadata before the next is touched; what no tier claims still comes back; the time left is
measured, reported per tier and in JSON lines; a dry run shows the same tiers without writing."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BOTH_BACKENDS, PASSWORD, RunCli, sample_archive
from tests.repos import RepoHandle
from tests.treecompare import describe_tree
from vault.cli.restore_progress import RateMeter, RestoreReport
from vault.format import layout
from vault.jobs.restore.entries import walk
from vault.jobs.restore.restorer import RestoreOptions, TierResult, restore
from vault.jobs.restore.tiers import TierPlan
from vault.policy.restore_priority import load_restore_priority

# The sample archive of seed 3 has five studies, 2023-02-23 to 2023-07-12; backed up "on"
# 2023-07-20, the last 90 days hold the two newest (2023-05-24 CT, 2023-07-12 IO).
SNAPSHOT_TIME = "2023-07-20 12:00:00"
POLICY = """
[[tier]]
name = "practice database"
paths = ["*.bak", "*.sql"]

[[tier]]
name = "recent studies"
studies = true
within_days = 90

[[tier]]
name = "imaging software"
paths = ["Sidexis*"]

[[tier]]
name = "older studies"
studies = true
"""


@pytest.fixture
def practice(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    root = tmp_path / "server"
    manifest = sample_archive.generate(root, seed=3, scale=0.3)
    software = root / "Sidexis4"
    (software / "db").mkdir(parents=True)
    (software / "db" / "settings.ini").write_text("[viewer]\nlanguage=en\n")
    (software / "current").symlink_to("db")
    notes = root / "notes"
    notes.mkdir()
    (notes / "readme.txt").write_text("the server's own notes\n")
    os.chmod(notes / "readme.txt", 0o640)
    (notes / "schedule.sql").write_text("-- tier 1, in a folder tier 5 also writes into\n")
    # Two names that print the same: the byte 0xff, and the four characters backslash-x-f-f.
    (notes / os.fsdecode(b"\xff")).write_bytes(b"undecodable name")
    (notes / "\\xff").write_bytes(b"decodable name")
    os.chmod(notes, 0o555)  # read-only: a later tier must still be able to write into it
    return root, manifest


def _policy(tmp_path: Path, text: str = POLICY) -> Path:
    path = tmp_path / "restore.toml"
    path.write_text(text)
    return path


def _expected_tiers(root: Path, manifest: dict[str, Any]) -> list[set[str]]:
    """Each tier's files and links, as snapshot paths, from the generator's own manifest."""

    def snap(rel: str) -> str:
        return str(root / rel)

    def dicom(rel: str) -> bool:  # a study's photos (JPEG) are not in the DICOM catalog
        with open(root / rel, "rb") as f:
            return f.read(132)[128:] == b"DICM"

    studies = sorted(manifest["studies"], key=lambda s: s["study_date"], reverse=True)
    recent = [s for s in studies if s["study_date"] >= "20230421"]
    older = [s for s in studies if s["study_date"] < "20230421"]
    assert recent and older, "the sample archive no longer spans the 90-day line"
    files = [f for s in studies for f in s["files"]] + manifest["other_files"]
    notes = {snap("notes/readme.txt"), snap("notes/" + os.fsdecode(b"\xff")), snap("notes/\\xff")}
    return [
        {snap(p) for p in manifest["other_files"] if p.endswith(".bak")}
        | {snap("notes/schedule.sql")},
        {snap(f) for s in recent for f in s["files"] if dicom(f)},
        {snap("Sidexis4/db/settings.ini"), snap("Sidexis4/current")},
        {snap(f) for s in older for f in s["files"] if dicom(f)},
        notes | {snap(f) for f in files if not f.endswith(".bak") and not dicom(f)},
    ]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class _Watcher:
    """A RestoreMonitor that checks the target each time a tier starts and ends."""

    def __init__(self, target: Path, source: Path) -> None:
        self.target, self.source = target, source
        self.tiers: list[TierPlan] = []
        self.seen: list[tuple[str, int]] = []

    def _state(self, path: bytes) -> str:
        restored = self.target / os.fsdecode(path).lstrip("/")
        original = Path(os.fsdecode(path))
        if not os.path.lexists(restored):
            return "absent"
        if original.is_symlink():
            same = restored.is_symlink() and os.readlink(restored) == os.readlink(original)
            return "done" if same else "partial"
        st, src = restored.stat(), original.stat()
        complete = (
            _sha256(restored) == _sha256(original)
            and st.st_mode == src.st_mode
            and st.st_mtime_ns == src.st_mtime_ns
        )
        return "done" if complete else "partial"

    def _check(self, finished_through: int) -> None:
        for tier in self.tiers:
            for entry in tier.entries:
                state = self._state(entry.path)
                if tier.number <= finished_through:
                    assert state == "done", (tier.name, entry.path, state)
                    self._check_folders(entry.path)
                elif tier.number > finished_through + 1:
                    assert state == "absent", (tier.name, entry.path, state)

    def _check_folders(self, path: bytes) -> None:
        """A finished tier is usable: the folders above it have their group and other
        permissions (the owner's may be widened while a later tier writes there)."""
        folder = Path(os.fsdecode(path)).parent
        while folder != self.source.parent:
            restored = self.target / str(folder).lstrip("/")
            have, want = restored.stat().st_mode, folder.stat().st_mode
            assert have & 0o077 == want & 0o077, (folder, oct(have), oct(want))
            assert have & 0o700 >= want & 0o700, (folder, oct(have), oct(want))
            folder = folder.parent

    def planned(self, tiers: list[TierPlan]) -> None:
        self.tiers = tiers

    def tier_started(self, tier: TierPlan) -> None:
        self.seen.append(("started", tier.number))
        self._check(tier.number - 1)

    def kept(self, amount: int) -> None:
        pass

    def verifying(self, tier: TierPlan) -> None:
        self.seen.append(("verifying", tier.number))

    def tier_finished(self, result: TierResult) -> None:
        self.seen.append(("finished", result.number))
        self._check(result.number)


@BOTH_BACKENDS
def test_tiers_come_back_in_order_each_verified_before_the_next_is_touched(
    tmp_path: Path, repo: RepoHandle, vault: RunCli, practice: tuple[Path, dict[str, Any]]
) -> None:
    root, manifest = practice
    assert vault("backup", "-r", repo, root, "--time", SNAPSHOT_TIME).code == 0
    r = repo.open(PASSWORD)
    snapshot = r.find_snapshot("latest")
    target = tmp_path / "restored"
    watcher = _Watcher(target, root)
    priority = load_restore_priority(_policy(tmp_path))
    result = restore(r, snapshot, RestoreOptions(target, priority=priority), monitor=watcher)

    expected = _expected_tiers(root, manifest)
    got = [{os.fsdecode(e.path) for e in t.entries} for t in watcher.tiers]
    for number, (have, want) in enumerate(zip(got, expected, strict=True), start=1):
        assert have == want, (number, sorted(have ^ want))
    assert [t.name for t in result.tiers] == [
        "practice database", "recent studies", "imaging software", "older studies",
        "everything else",
    ]  # fmt: skip
    assert watcher.seen == [(kind, n) for n in range(1, 6) for kind in
                            ("started", "verifying", "finished")]  # fmt: skip
    assert not result.problems
    assert result.verified == sum(len([p for p in t if not Path(p).is_symlink()]) for t in expected)
    assert result.files == sum(1 for p in root.rglob("*") if p.is_file() and not p.is_symlink())
    assert all(t.verified == t.files and t.outcome == "PASS" for t in result.tiers)
    # Nothing is left out by the reordering: the whole tree, byte for byte, with metadata.
    assert describe_tree(target / root.relative_to("/")) == describe_tree(root)


def test_newest_study_first_within_a_studies_tier(
    tmp_path: Path, repo: RepoHandle, vault: RunCli, practice: tuple[Path, dict[str, Any]]
) -> None:
    root, manifest = practice
    assert vault("backup", "-r", repo, root, "--time", SNAPSHOT_TIME).code == 0
    r = repo.open(PASSWORD)
    policy = _policy(tmp_path, '[[tier]]\nname = "all studies"\nstudies = true\n')
    watcher = _Watcher(tmp_path / "t", root)
    restore(r, r.find_snapshot("latest"),
            RestoreOptions(tmp_path / "t", priority=load_restore_priority(policy)),
            monitor=watcher)  # fmt: skip
    order = [os.fsdecode(e.path) for e in watcher.tiers[0].entries]
    date_of = {str(root / f): s["study_date"] for s in manifest["studies"] for f in s["files"]}
    dates = [date_of[p] for p in order]
    assert dates == sorted(dates, reverse=True) and len(set(dates)) >= 4


def _lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines()]


@BOTH_BACKENDS
def test_json_progress_gives_tiers_throughput_and_time_left(
    tmp_path: Path, repo: RepoHandle, vault: RunCli, practice: tuple[Path, dict[str, Any]]
) -> None:
    root, _ = practice
    assert vault("backup", "-r", repo, root, "--time", SNAPSHOT_TIME).code == 0
    # The flag before the snapshot: it takes no value, so `latest` stays the snapshot.
    run = vault("restore", "--json-progress", "latest", "-r", repo, "--target", tmp_path / "t",
                "--priority", _policy(tmp_path), "--progress-interval", "0.05")  # fmt: skip
    assert run.code == 0, run.err
    lines = _lines(run.out)
    kinds = [line["type"] for line in lines]
    assert kinds[0] == "plan" and kinds[-1] == "result"
    plan = lines[0]
    assert [t["name"] for t in plan["tiers"]][-1] == "everything else"
    assert plan["bytes_total"] == sum(t["bytes"] for t in plan["tiers"])
    # Tiers start and end in order, each one verified in between.
    events = [(line["type"], line["tier"]) for line in lines
              if line["type"] in ("tier_started", "verifying", "tier_done")]  # fmt: skip
    assert events == [(k, n) for n in range(1, 6) for k in ("tier_started", "verifying",
                                                              "tier_done")]  # fmt: skip
    progress = [line for line in lines if line["type"] == "progress"]
    for line in progress:
        for key in ("eta_tier_seconds", "eta_total_seconds", "throughput_bytes_per_second",
                    "bytes_done", "bytes_total", "tier", "tiers", "phase"):  # fmt: skip
            assert key in line
        assert 0 <= line["bytes_done"] <= line["bytes_total"] == plan["bytes_total"]
    # Before anything is restored the time left is unknown, not guessed.
    assert progress[0]["bytes_done"] == 0 and progress[0]["eta_total_seconds"] is None
    # Once the first tier is done it is measured: a speed and a time left for the rest.
    after_first = lines[kinds.index("tier_done") + 1]
    assert after_first["type"] == "progress" and after_first["throughput_bytes_per_second"] > 0
    # The time left is what remains to fetch at the fetch speed, plus what remains to verify
    # at the speed verification was measured at.
    fetch_left = plan["bytes_total"] - after_first["bytes_done"]
    check_left = plan["bytes_total"] - after_first["bytes_verified"]
    assert after_first["verify_bytes_per_second"] > 0
    assert after_first["eta_total_seconds"] == pytest.approx(
        fetch_left / after_first["throughput_bytes_per_second"]
        + check_left / after_first["verify_bytes_per_second"],
        rel=0.01,
        abs=0.002,
    )
    assert progress[-1]["bytes_done"] == plan["bytes_total"]
    assert progress[-1]["eta_total_seconds"] == 0
    result = lines[-1]
    assert result["outcome"] == "PASS" and result["verified_files"] == result["files"]
    assert [t["name"] for t in result["tiers"]] == [t["name"] for t in plan["tiers"]]
    assert all(t["seconds"] >= 0 and t["outcome"] == "PASS" for t in result["tiers"])


def test_the_terminal_gets_a_line_per_tier_and_a_table_of_tier_times(
    tmp_path: Path, repo: RepoHandle, vault: RunCli, practice: tuple[Path, dict[str, Any]]
) -> None:
    root, _ = practice
    assert vault("backup", "-r", repo, root, "--time", SNAPSHOT_TIME).code == 0
    run = vault("restore", "latest", "-r", repo, "--target", tmp_path / "t", "--priority",
                _policy(tmp_path))  # fmt: skip
    assert run.code == 0, run.err
    lines = [line for line in run.out.splitlines() if line.startswith("tier ") and "/" in line]
    assert [line.split(":")[0] for line in lines] == [
        "tier 1/5 practice database", "tier 2/5 recent studies", "tier 3/5 imaging software",
        "tier 4/5 older studies", "tier 5/5 everything else",
    ]  # fmt: skip
    assert all("verified" in line for line in lines)
    assert "4 tier(s) left" in lines[0] and "left" not in lines[-1]
    assert "older studies" in run.out.split("tier  name")[1]  # the summary table


def test_a_dry_run_shows_the_tiers_a_restore_would_make_and_writes_nothing(
    tmp_path: Path, repo: RepoHandle, vault: RunCli, practice: tuple[Path, dict[str, Any]]
) -> None:
    root, manifest = practice
    assert vault("backup", "-r", repo, root, "--time", SNAPSHOT_TIME).code == 0
    policy = _policy(tmp_path)
    target = tmp_path / "t"
    dry = vault("restore", "latest", "-r", repo, "--target", target, "--priority", policy,
                "--dry-run", "--json")  # fmt: skip
    assert dry.code == 0, dry.err
    assert not target.exists()
    doc = dry.json()
    expected = _expected_tiers(root, manifest)
    assert [t["files"] + t["symlinks"] for t in doc["tiers"]] == [len(t) for t in expected]
    sizes = [sum(Path(p).lstat().st_size for p in t if not Path(p).is_symlink()) for t in expected]
    assert [t["bytes"] for t in doc["tiers"]] == sizes
    assert all(t["fetch_bytes"] > 0 for t in doc["tiers"] if t["bytes"])
    # No drill yet: no throughput measured, so no time is claimed.
    assert doc["estimated_seconds"] is None and doc["throughput_bytes_per_second"] is None
    assert "no time estimate" in vault("restore", "latest", "-r", repo, "--target", target,
                                       "--priority", policy, "--dry-run").out  # fmt: skip

    # The drill misses its RPO (the snapshot is dated 2023) but measures throughput all the same.
    ran = vault("drill", "-r", repo, "--json", "--record-dir", tmp_path / "drills")
    assert ran.code == 1 and ran.json()["volume"]["throughput_bytes_per_second"] > 0
    rate = ran.json()["volume"]["throughput_bytes_per_second"]
    doc = vault("restore", "latest", "-r", repo, "--target", target, "--priority", policy,
                "--dry-run", "--json").json()  # fmt: skip
    assert doc["throughput_bytes_per_second"] == rate
    assert doc["estimated_seconds"] == pytest.approx(sum(sizes) / rate, abs=0.1)
    assert [t["estimated_seconds"] for t in doc["tiers"]] == [
        pytest.approx(s / rate, abs=0.1) for s in sizes
    ]

    assert vault("restore", "latest", "-r", repo, "--target", target).code == 0
    doc = vault("restore", "latest", "-r", repo, "--target", target, "--priority", policy,
                "--dry-run", "--json").json()  # fmt: skip
    assert doc["existing_in_target"] == sum(len(t) for t in expected)


def test_status_projects_the_full_restore_from_the_drills_throughput(
    tmp_path: Path, repo: RepoHandle, vault: RunCli, practice: tuple[Path, dict[str, Any]]
) -> None:
    root, _ = practice
    assert vault("backup", "-r", repo, root).code == 0
    assert vault("status", "-r", repo, "--json").json()["projected_full_restore"] is None
    ran = vault("drill", "-r", repo, "--json", "--record-dir", tmp_path / "drills")
    assert ran.code == 0, ran.err
    drill = ran.json()
    doc = vault("status", "-r", repo, "--json").json()
    projected = doc["projected_full_restore"]
    size = json.loads(vault("snapshots", "-r", repo, "--json").out)[-1]["stats"]["bytes"]
    assert projected["from_drill"] == drill["drill_id"]
    assert projected["seconds"] == pytest.approx(
        size / drill["volume"]["throughput_bytes_per_second"], abs=0.1
    )
    assert not any("projected" in f["message"] for f in doc["findings"])
    # A projection past the full-restore RTO is a warning that says what to do.
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "drill.toml").write_text("[drill]\nfull_restore_rto_hours = 0\n")
    doc = vault("status", "-r", repo, "--json", "--policy-dir", policies).json()
    warned = [f for f in doc["findings"] if "projected" in f["message"]]
    assert warned and warned[0]["level"] == "WARN" and "RTO" in warned[0]["message"]


BAD_POLICIES = [
    ("", "no [[tier]] tables"),
    ('[[tier]]\nname = "a"\n', "claims nothing"),
    ('[[tier]]\nname = "a"\npaths = ["x"]\nwithin_days = 9\n', "needs studies = true"),
    ('[[tier]]\nname = "a"\nstudies = true\nwithin_days = 0\n', "from 1 to 36500"),
    ('[[tier]]\nname = "a"\nstudies = true\nwithin_days = 1000000\n', "from 1 to 36500"),
    ('[[tier]]\nname = "a"\npaths = "x"\n', "must be a list"),
    ('[[tier]]\nname = "a"\npaths = ["x"]\n\n[[tier]]\nname = "b"\nstudys = true\n',
     "line 7: tier 2: studys is not a tier key"),
    ('[[tier]]\nname = "a"\npaths = ["x"]\n[[tier]]\nname = "a"\npaths = ["y"]\n', "used twice"),
    ('[[tier]]\nname = "everything else"\npaths = ["x"]\n', "reserved"),
    ("[restore]\nx = 1\n", "unknown table or key 'restore'"),
    ("[[tier]\n", "not valid TOML"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "complaint"), BAD_POLICIES)
def test_a_bad_priority_file_is_one_clear_error_before_anything_is_read(
    tmp_path: Path, repo: RepoHandle, vault: RunCli, text: str, complaint: str
) -> None:
    policy = _policy(tmp_path, text)
    run = vault("restore", "latest", "-r", repo, "--target", tmp_path / "t", "--priority", policy)
    assert run.code == 2
    assert complaint in run.err and str(policy) in run.err
    assert len(run.err.strip().splitlines()) == 1 and "Traceback" not in run.err
    assert not (tmp_path / "t").exists()


def test_the_shipped_priority_file_is_valid_and_names_the_database_first() -> None:
    shipped = load_restore_priority(Path(__file__).parent.parent / "policies" / "restore.toml")
    assert shipped.tiers[0].paths and shipped.tiers[1].studies and shipped.tiers[1].within_days


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_rate_is_measured_over_a_window_and_forgets_old_speed() -> None:
    clock = _Clock()
    meter = RateMeter(clock)
    assert meter.rate() is None  # nothing restored: unknown, not zero or a guess
    for _ in range(40):  # 40 s at 10 MB/s
        clock.now += 1
        meter.add(10_000_000)
    assert meter.rate() == pytest.approx(10e6, rel=0.05)
    for _ in range(60):  # the network slows to 1 MB/s for a minute
        clock.now += 1
        meter.add(1_000_000)
    assert meter.rate() == pytest.approx(1e6, rel=0.1)


def test_time_on_other_work_does_not_dilute_a_speed() -> None:
    clock = _Clock()
    meter = RateMeter(clock, running=False)
    clock.now += 100  # planning: not fetching
    meter.run()
    for _ in range(10):
        clock.now += 1
        meter.add(10_000_000)
    meter.pause()
    clock.now += 300  # a long verification
    assert meter.rate() == pytest.approx(10e6)
    meter.run()
    clock.now += 1
    meter.add(10_000_000)
    assert meter.rate() == pytest.approx(10e6)


def _tier(number: int, size: int) -> TierPlan:
    from vault.format.tree import FILE, Node
    from vault.jobs.restore.entries import Entry

    node = Node(name=b"f", type=FILE, mode=0o644, uid=0, gid=0, mtime_ns=0, size=size)
    return TierPlan(number, f"tier {number}", [Entry(b"/f%d" % number, node)])


def test_the_time_left_counts_fetching_and_verifying_each_at_its_own_speed() -> None:
    clock = _Clock()
    report = RestoreReport(verifies=True, clock=clock)
    tiers = [_tier(1, 100_000_000), _tier(2, 100_000_000)]
    report.planned(tiers)
    assert report.snapshot()["eta_total_seconds"] is None  # nothing measured yet
    clock.now += 50  # planning, not counted as speed
    report.tier_started(tiers[0])
    for _ in range(10):  # 100 MB fetched at 10 MB/s
        clock.now += 1
        report.advance(10_000_000)
    # Left: 100 MB to fetch and 200 MB to verify, verification not timed yet: all at 10 MB/s.
    assert report.snapshot()["eta_total_seconds"] == pytest.approx(30.0)
    report.verifying(tiers[0])
    for _ in range(2):  # 100 MB verified at 50 MB/s
        clock.now += 1
        report.advance(50_000_000)
    report.tier_finished(TierResult(1, "tier 1", files=1, bytes=100_000_000, verified=1))
    state = report.snapshot()
    # 100 MB to fetch at 10 MB/s, 100 MB to verify at 50 MB/s: the pause to verify did not
    # make fetching look slower.
    assert state["eta_total_seconds"] == pytest.approx(12.0)
    assert state["throughput_bytes_per_second"] == pytest.approx(10e6)
    report.tier_started(tiers[1])
    for _ in range(10):
        clock.now += 1
        report.advance(10_000_000)
    report.verifying(tiers[1])
    clock.now += 2
    report.advance(100_000_000)
    report.tier_finished(TierResult(2, "tier 2", files=1, bytes=100_000_000, verified=1))
    assert report.snapshot()["eta_total_seconds"] == 0


def test_bytes_a_resume_found_in_place_count_as_done_but_not_as_speed() -> None:
    clock = _Clock()
    report = RestoreReport(clock=clock)
    tier = _tier(1, 910_000_000)
    report.planned([tier])
    report.tier_started(tier)
    report.kept(900_000_000)  # a resume checked 900 MB already in place, in no time
    report.advance(900_000_000)
    clock.now += 10
    report.advance(10_000_000)  # then fetched 10 MB in 10 s
    state = report.snapshot()
    assert state["bytes_done"] == 910_000_000
    assert state["throughput_bytes_per_second"] == pytest.approx(1e6)
    assert state["eta_total_seconds"] == 0


def test_a_resume_that_finds_everything_in_place_ends_with_no_time_left() -> None:
    report = RestoreReport(clock=_Clock())
    tier = _tier(1, 1000)
    report.planned([tier])
    report.tier_started(tier)
    report.kept(1000)
    report.advance(1000)
    report.tier_finished(TierResult(1, "tier 1", files=1, bytes=1000))
    assert report.snapshot()["eta_total_seconds"] == 0


def test_a_failed_tier_is_reported_and_the_later_tiers_still_come_back(
    tmp_path: Path, repo: RepoHandle, vault: RunCli, practice: tuple[Path, dict[str, Any]]
) -> None:
    root, _ = practice
    assert vault("backup", "-r", repo, root, "--time", SNAPSHOT_TIME).code == 0
    r = repo.open(PASSWORD)
    r.load_index()
    dump = root / "exports" / "pms_dump.bak"
    nodes = {os.fsdecode(e.path): e.node for e in walk(r, r.find_snapshot("latest"), [])}
    location = r.index.lookup(bytes.fromhex(nodes[str(dump)].chunks[0]))
    assert location is not None
    # One flipped byte inside one chunk of the dump: that chunk, and only it, fails.
    repo.flip(layout.pack(location.pack.id), location.entry.offset + location.entry.length // 2)
    target = tmp_path / "t"
    run = vault("restore", "latest", "-r", repo, "--target", target, "--priority",
                _policy(tmp_path), "--json")  # fmt: skip
    assert run.code == 1
    doc = run.json()
    outcomes = [(t["name"], t["outcome"], t["problems"]) for t in doc["tiers"]]
    assert outcomes[0] == ("practice database", "FAIL", 1)  # one file, however many chunks
    assert all(outcome == "PASS" for _, outcome, _ in outcomes[1:])
    assert [p["path"] for p in doc["problems"]] == [str(dump)]
    restored = target / str(dump).lstrip("/")
    # The broken file does not pass for good: not the recorded time or mode.
    assert restored.stat().st_mtime_ns != dump.stat().st_mtime_ns
    assert restored.stat().st_mode & 0o077 == 0
    others = [p for p in root.rglob("*") if p.is_file() and p != dump]
    assert all((target / str(p).lstrip("/")).read_bytes() == p.read_bytes() for p in others)


def test_priority_orders_what_include_selects_and_nothing_else(
    tmp_path: Path, repo: RepoHandle, vault: RunCli, practice: tuple[Path, dict[str, Any]]
) -> None:
    root, _ = practice
    assert vault("backup", "-r", repo, root, "--time", SNAPSHOT_TIME).code == 0
    imaging = root / "imaging"
    target = tmp_path / "t"
    run = vault("restore", "latest", "-r", repo, "--target", target, "--priority",
                _policy(tmp_path), "--include", imaging, "--json")  # fmt: skip
    assert run.code == 0, run.err
    tiers = {t["name"]: t for t in run.json()["tiers"]}
    assert tiers["practice database"]["files"] == 0
    assert tiers["practice database"]["note"] == "nothing in this restore matches it"
    assert tiers["recent studies"]["files"] > 0 and tiers["older studies"]["files"] > 0
    assert describe_tree(target / str(imaging).lstrip("/")) == describe_tree(imaging)
    assert not (target / str(root / "exports").lstrip("/")).exists()


def test_json_progress_ends_with_an_error_line_when_the_restore_cannot_go_on(
    tmp_path: Path, repo: RepoHandle, vault: RunCli, practice: tuple[Path, dict[str, Any]]
) -> None:
    root, _ = practice
    assert vault("backup", "-r", repo, root).code == 0
    blocked = tmp_path / "t"
    blocked.write_text("a file where the target directory should be")
    run = vault("restore", "latest", "-r", repo, "--target", blocked, "--json-progress")
    assert run.code == 2
    never = vault("restore", "latest", "-r", repo, "--target", tmp_path / "u", "--json-progress",
                  "--progress-interval", "0")  # fmt: skip
    assert never.code == 2 and "--progress-interval" in never.err
    assert not (tmp_path / "u").exists()
    last = _lines(run.out)[-1]
    assert last["type"] == "error" and last["exit_code"] == 2 and str(blocked) in last["message"]
