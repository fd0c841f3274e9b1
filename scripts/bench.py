#!/usr/bin/env python3
"""vault against restic and borg on the same synthetic dental archive, in the same run.

Generates (seeded) an archive of about SIZE_GB: CBCT one-file-per-slice series and multi-frame
volumes (12-bit phantoms with noise: zstd gets 2-3x, not 10x), panoramic and intraoral
radiographs, photos and a practice-management dump (scripts/make_sample_archive.py, one
"practice" per seed). Then, RUNS rounds, each tool in turn (the order rotates every round):

    init; initial backup; no-change nightly backup; add a new study and correct a header field
    of a multi-frame CBCT volume, nightly backup; full restore; single-study restore;
    check --read-data; repository size

and, unless --no-s3, backup and restore of vault and restic against a SeaweedFS S3 server on
loopback, with request counts. Medians go to docs/benchmarks.md (between its bench:peers
markers) with ratios against restic, machine facts, versions and this command line. Also
measures the primitives (zstd, AES-256-GCM, SHA-256, HMAC-SHA-256, FastCDC) on the same data.

    python scripts/bench.py --size-gb 3 [--runs 2] [--work DIR] [--no-s3] [--out FILE]

Not part of the test suite; `scripts/test.sh` runs it at a tiny size as a smoke test.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import pydicom  # noqa: E402
from bench_network import SECTION as NETWORK_SECTION  # noqa: E402
from bench_network import add_options as add_network_options  # noqa: E402
from bench_network import from_options as run_network_options  # noqa: E402
from bench_network import publish as publish_network  # noqa: E402
from bench_peers import TOOLS, Measured, Tool, dir_bytes, ensure_installed  # noqa: E402
from bench_primitives import primitives  # noqa: E402
from bench_report import write_report  # noqa: E402
from doc_section import replace_section  # noqa: E402
from make_sample_archive import Shape, generate  # noqa: E402

PRACTICE_SCALE = 10.0  # one generated "practice" at this scale is about 150 MB


# -- the data ---------------------------------------------------------------------------------


def make_archive(
    data: Path,
    size_gb: float,
    shape: Shape | None = None,
    scale: float | None = None,
    name: str = "mixed",
) -> dict[str, Any]:
    """Generate practices of `shape` until the archive reaches size_gb; reuse a complete
    earlier one of the same shape (its name is in the marker)."""
    marker = data / (f".complete-{size_gb}" + ("" if name == "mixed" else f"-{name}"))
    if marker.exists():
        return json.loads(marker.read_text())  # type: ignore[no-any-return]
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    target, total, seed, started = size_gb * 1e9, 0, 0, time.perf_counter()
    if scale is None:
        scale = PRACTICE_SCALE if size_gb >= 0.5 else max(0.2, size_gb * 20)
    while total < target or seed < 2:  # two at least: the nightly edits the other one
        seed += 1
        manifest = generate(
            data / f"practice{seed:03d}", seed=1000 + seed, scale=scale, shape=shape or Shape()
        )
        total += manifest["bytes"]
    files = sum(1 for p in data.rglob("*") if p.is_file())
    info = {
        "bytes": total,
        "files": files,
        "practices": seed,
        "generate_seconds": round(time.perf_counter() - started, 1),
    }
    marker.write_text(json.dumps(info))
    print(f"archive: {total / 1e9:.2f} GB in {files} files ({seed} practices)", file=sys.stderr)
    return info


class Change:
    """The nightly change: a new study arrives, and a patient's name is corrected in the header
    of an existing multi-frame CBCT volume (pixel data unchanged), or of a DICOM file outside
    the study restored on its own where the archive has no volume. Undone after each tool."""

    def __init__(self, data: Path, staging: Path, study: str) -> None:
        self.data = data
        self.new_study = staging / "new-study"
        if not self.new_study.exists():
            generate(self.new_study, seed=99, scale=1.0)
        volumes = sorted(data.glob("practice*/imaging/DEMO-0002/*_CT/IMG0001.dcm"))
        volumes = volumes or sorted(data.glob("practice*/imaging/*/*/IMG0001.dcm"))
        # The study restored on its own must be the same in every snapshot.
        outside = [v for v in volumes if not v.is_relative_to(study)]
        if not outside:
            raise SystemExit(f"no DICOM file outside the study {study} to edit in {data}")
        self.volume = outside[0]
        self.pristine = staging / "pristine-volume.dcm"
        shutil.copy2(self.volume, self.pristine)
        self.arrived = data / "practice000-new"
        self.study_bytes = dir_bytes(self.new_study)

    def apply(self) -> None:
        shutil.copytree(self.new_study, self.arrived)
        ds = pydicom.dcmread(self.volume)
        ds.PatientName = "DEMO^BOB^CORRECTED"
        ds.save_as(self.volume)

    def undo(self) -> None:
        shutil.rmtree(self.arrived)
        shutil.copy2(self.pristine, self.volume)


def large_volume(path: Path, size_gb: float) -> Path:
    """One multi-frame CBCT volume of about size_gb: 512x512 12-bit frames, a smooth phantom
    with fresh noise in every frame (so nothing deduplicates and zstd gets about 2:1, as on the
    archive), written once and reused. Made in a child process: the tools' peak memory is
    measured by wait4, and a child forked from a bench process that once held the volume
    would report the bench's memory as its own."""
    import multiprocessing

    volume = path / "volume.dcm"
    if not volume.exists():
        child = multiprocessing.get_context("spawn").Process(
            target=_write_large_volume, args=(volume, size_gb)
        )
        child.start()
        child.join()
        if child.exitcode != 0 or not volume.exists():
            raise RuntimeError(f"could not generate the large volume {volume}")
    return volume


def _write_large_volume(volume: Path, size_gb: float) -> None:
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    volume.parent.mkdir(parents=True, exist_ok=True)
    frames = max(1, int(size_gb * 1e9 / (512 * 512 * 2)))
    rng = np.random.default_rng(2026)
    y, x = np.mgrid[-1:1:512j, -1:1:512j]
    phantom = (1800 * np.exp(-(x**2 + (y / 0.8) ** 2) * 3)).astype(np.int32)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"  # Enhanced CT
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.Modality = "DEMO^LARGE", "DEMO-LARGE", "CT"
    ds.StudyDate, ds.StudyDescription = "20261201", "CBCT volume, large (synthetic)"
    ds.Rows = ds.Columns = 512
    ds.NumberOfFrames = frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    pixels = bytearray()
    for _ in range(frames):
        noise = rng.normal(0, 40, (512, 512)).astype(np.int32)
        pixels += np.clip(phantom + 1000 + noise, 0, 4095).astype("<u2").tobytes()
    ds.PixelData = bytes(pixels)
    partial = volume.with_suffix(".partial")
    ds.save_as(partial, enforce_file_format=True)
    partial.rename(volume)  # a killed run leaves no half volume to be reused


def single_study(data: Path) -> str:
    """The largest CBCT study (what a dentist asks for first), or the largest study of an
    archive that has none."""
    studies = [p for p in data.glob("practice*/imaging/DEMO-0001/*_CT") if p.is_dir()]
    studies = studies or [p for p in data.glob("practice*/imaging/*/*_CT") if p.is_dir()]
    studies = studies or [p for p in data.glob("practice*/imaging/*/*") if p.is_dir()]
    return str(max(studies, key=dir_bytes))


# -- one round of one tool --------------------------------------------------------------------


def _record(results: dict[str, list[float]], name: str, m: Measured, size: int = 0) -> None:
    results[f"{name}_seconds"].append(m.seconds)
    results[f"{name}_cpu_seconds"].append(m.cpu_seconds)
    results[f"{name}_peak_rss_bytes"].append(m.peak_rss_bytes)
    if size:
        results[f"{name}_mb_per_s"].append(size / m.seconds / 1e6)


DROP_CACHES = True  # --no-drop-caches: leave the machine's page cache alone (the test smoke run)


def settle(*warm: Path, drop: bool | None = None) -> None:
    """The same start for every tool's timed step: dirty pages written out, the page cache
    dropped (when this runs as root) and filled again with what the step reads. Without it a
    restore paid for the writeback and freeing of the previous tool's restore: the same
    restore measured 1.8 s or 3.8 s (three times the kernel time) by what ran before it.
    drop=False only fills the cache (a million tiny files take minutes to read from disk)."""
    os.sync()
    if DROP_CACHES if drop is None else drop:
        with contextlib.suppress(OSError):  # not root: the cache is not dropped, only filled
            Path("/proc/sys/vm/drop_caches").write_text("1")
    for root in warm:
        for path in [root] if root.is_file() else root.rglob("*"):
            if path.is_file():
                with path.open("rb") as handle:
                    while handle.read(1 << 20):
                        pass


def run_local(
    tool: Tool,
    repo: Path,
    data: Path,
    info: dict[str, Any],
    change: Change,
    study: str,
    scratch: Path,
    results: dict[str, list[float]],
    volume: Path | None = None,
) -> None:
    shutil.rmtree(repo, ignore_errors=True)
    tool.init()
    size = int(info["bytes"])
    settle(data)
    _record(results, "initial_backup", tool.backup(data), size)
    settle(data, repo)
    _record(results, "nightly_nochange", tool.backup(data))
    before = dir_bytes(repo)
    change.apply()
    try:
        settle(data, repo)
        changed = tool.backup(data)
    finally:
        change.undo()
    _record(results, "nightly_change", changed)
    results["nightly_change_repo_growth_bytes"].append(dir_bytes(repo) - before)
    added = tool.added_bytes(changed)
    if added is not None:
        results["nightly_change_reported_added_bytes"].append(added)
    target = scratch / "restore"
    shutil.rmtree(target, ignore_errors=True)
    settle(repo)
    _record(results, "full_restore", tool.restore(target), size)
    shutil.rmtree(target)
    study_bytes = dir_bytes(Path(study))
    settle(repo)
    _record(results, "study_restore", tool.restore(target, include=study), study_bytes)
    restored = target / study.lstrip("/")
    if dir_bytes(restored) != study_bytes:
        raise RuntimeError(f"{tool.name} restored {dir_bytes(restored)} of {study_bytes} bytes")
    shutil.rmtree(target)
    if volume is not None:
        # One large volume, backed up into the same repository and restored on its own: a
        # file this size must be fetched in parallel, not one chunk at a time.
        tool.backup(volume.parent)
        size = volume.stat().st_size
        settle(repo)
        _record(results, "volume_restore", tool.restore(target, include=str(volume)), size)
        if (target / str(volume).lstrip("/")).stat().st_size != size:
            raise RuntimeError(f"{tool.name} did not restore the large volume whole")
        shutil.rmtree(target)
    settle(repo)
    _record(results, "check_read_data", tool.check_read_data())
    results["repository_bytes"].append(dir_bytes(repo))


# -- S3 ----------------------------------------------------------------------------------------


def run_s3(
    names: list[str], data: Path, info: dict[str, Any], scratch: Path, runs: int
) -> dict[str, Any]:
    from tests.faultproxy import FaultProxy
    from tests.s3server import start_server

    shutil.rmtree(scratch / "seaweedfs", ignore_errors=True)
    server = start_server(scratch / "seaweedfs")
    out: dict[str, Any] = {}
    try:
        client = server.client()
        host, port = server.endpoint.removeprefix("http://").split(":")
        for name in [n for n in names if n in ("vault", "restic")]:
            results: dict[str, list[float]] = defaultdict(list)
            for r in range(runs + 1):
                # The last pass goes through a counting proxy (slower: counts only).
                proxy = FaultProxy(host, int(port)) if r == runs else None
                endpoint = proxy.endpoint if proxy else server.endpoint
                bucket = f"bench-{name}-{r}"
                client.create_bucket(Bucket=bucket)
                env = {**os.environ, **server.env(), "AWS_ENDPOINT_URL_S3": endpoint}
                repo = f"s3://{bucket}/repo" if name == "vault" else f"s3:{endpoint}/{bucket}/repo"
                tool = TOOLS[name](repo, env)
                tool.init()
                counted = proxy.requests if proxy else 0
                backup = tool.backup(data)
                if proxy:
                    results["backup_requests"].append(proxy.requests - counted)
                    counted = proxy.requests
                else:
                    _record(results, "backup", backup, int(info["bytes"]))
                target = scratch / "s3-restore"
                shutil.rmtree(target, ignore_errors=True)
                restore = tool.restore(target)
                shutil.rmtree(target)
                if proxy:
                    results["restore_requests"].append(proxy.requests - counted)
                    proxy.close()
                else:
                    _record(results, "restore", restore, int(info["bytes"]))
            out[name] = {k: statistics.median(v) for k, v in results.items()}
    finally:
        server.stop()
    return out


# -- main -------------------------------------------------------------------------------------


def tool_env() -> dict[str, str]:
    """The tools' environment: the tests' cheap key derivation never reaches a benchmark."""
    env = dict(os.environ)
    env.pop("VAULT_TEST_FAST_KDF", None)
    return env


def machine() -> dict[str, str]:
    cpu = "unknown"
    with open("/proc/cpuinfo", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory": f"{mem / 2**30:.0f} GiB",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


def main(argv: list[str] | None = None) -> int:
    # bench_shapes imports this module as `bench`: run as a script, it must get this one, not a
    # second copy with its own DROP_CACHES.
    sys.modules.setdefault("bench", sys.modules[__name__])
    import bench_shapes  # here, not above: it imports this module

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-gb", type=float, default=3.0)
    parser.add_argument("--runs", type=int, default=2, help="rounds per tool (median reported)")
    parser.add_argument("--tools", default="vault,restic,borg")
    parser.add_argument("--work", type=Path, default=Path("/var/tmp/vault-bench"))
    parser.add_argument("--no-s3", action="store_true")
    parser.add_argument(
        "--volume-gb",
        type=float,
        default=1.0,
        help="size of the one large CBCT volume restored on its own (0: none)",
    )
    add_network_options(parser)
    bench_shapes.add_options(parser, default="")
    parser.add_argument(
        "--no-drop-caches",
        action="store_true",
        help="before each timed step only write dirty pages and read what the step reads",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    args = parser.parse_args(argv)
    bench_shapes.chosen(args)  # a mistyped shape fails before any run
    global DROP_CACHES
    DROP_CACHES = not args.no_drop_caches
    names = [n.strip() for n in args.tools.split(",") if n.strip()]
    ensure_installed(names)
    # As `pip install` does: compiled modules, so no run pays for compiling vault's source.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "vault")], check=True)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    info = make_archive(work / "data", args.size_gb)
    data = work / "data"
    study = single_study(data)
    change = Change(data, work / "staging", study)
    volume = None
    if args.volume_gb:
        volume = large_volume(work / f"large-{args.volume_gb}", args.volume_gb)
    env = tool_env()
    per_tool: dict[str, dict[str, list[float]]] = {n: defaultdict(list) for n in names}
    versions: dict[str, str] = {}
    for r in range(args.runs):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            repo = work / "repos" / name
            tool = TOOLS[name](str(repo), env)
            versions[name] = tool.version()
            print(f"round {r + 1}/{args.runs}: {name}", file=sys.stderr)
            run_local(tool, repo, data, info, change, study, work, per_tool[name], volume)
            shutil.rmtree(repo)
    s3 = {} if args.no_s3 else run_s3(names, data, info, work, args.runs)
    network = run_network_options(args, names, work) if args.network_size_gb else {}
    shapes = bench_shapes.run_shapes(args, names, work)
    prims = primitives(data)
    medians = {n: {k: statistics.median(v) for k, v in r.items()} for n, r in per_tool.items()}
    document = {
        "command": "python scripts/bench.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine(),
        "versions": versions,
        "archive": info
        | {
            "study_bytes": dir_bytes(Path(study)),
            "new_study_bytes": change.study_bytes,
            "volume_bytes": volume.stat().st_size if volume else 0,
        },
        "runs": args.runs,
        "local": medians,
        "raw": {n: dict(r) for n, r in per_tool.items()},
        "s3": s3,
        "network": network,
        "shapes": shapes,
        "primitives": prims,
    }
    if args.json:
        args.json.write_text(json.dumps(document, indent=2))
    write_report(args.out, document)
    if network:
        replace_section(
            args.out, NETWORK_SECTION, publish_network(network, document["command"]), title=""
        )
    if shapes:
        text = bench_shapes.render(shapes, args.runs, document["command"])
        replace_section(args.out, bench_shapes.SECTION, text, title="")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
