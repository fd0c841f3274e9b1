#!/usr/bin/env python3
"""vault against restic and borg on archives of other shapes than bench.py's mixed practice.

A speed-up that holds on one archive only is not a speed-up. Each shape is a generated archive
of its own (scripts/make_sample_archive.py, seeded), and each runs the same rounds as bench.py's
main archive, every tool in turn, in the same run:

    init; initial backup; no-change nightly; new study + header edit, nightly; full restore;
    single-study restore (the largest study); check --read-data; repository size

    slices   one-file-per-slice CBCT series only, with a small field of view: more air
             around the phantom, so the archive compresses about 3.3:1 (the mixed one: 2.3:1)
    small    full-mouth intraoral series (18 radiographs of 480 KB) and 50-100 KB photos
    volumes  multi-frame CBCT volumes of 52 MB, one file per study

Medians go to docs/benchmarks.md between its bench:shapes markers.

    python scripts/bench_shapes.py [--shapes slices,small,volumes] [--size-gb 0.5] [--runs 2]

`bench.py --shapes ...` runs the same after its main archive.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench
from bench_peers import TOOLS, dir_bytes, ensure_installed
from bench_report import ROWS, TARGETS, _ratio, _value, times_better
from doc_section import replace_section
from make_sample_archive import Shape

SECTION = "bench:shapes"

# name: (shape of each practice, practice scale, what it is)
SHAPES: dict[str, tuple[Shape, float, str]] = {
    "slices": (
        Shape(kinds=("cbct-series",), fov_radius=0.72),
        5.0,
        "CBCT one-file-per-slice series only (300 slices of 131 KB a study), small field of "
        "view: more air, compresses about 3.3:1",
    ),
    "small": (
        Shape(kinds=("intraoral", "photo"), images_per_study=18),
        0.25,
        "full-mouth intraoral series (18 radiographs of 480 KB) and 18 photos of 50-100 KB "
        "a practice",
    ),
    "volumes": (
        Shape(kinds=("cbct-multiframe",)),
        10.0,
        "multi-frame CBCT volumes of 52 MB, one file a study",
    ),
}

# The rows of the main table that every shape has (no separate large volume here); a shape's
# single study is its largest, a CBCT series only where it has one.
STUDY_LABEL = "single-study restore (the largest study)"
SHAPE_ROWS = [
    (key, STUDY_LABEL if key == "study_restore_seconds" else label, unit, better)
    for key, label, unit, better in ROWS
    if not key.startswith("volume_")
]
# The main table's round-2 goals, but memory (in each shape's own table) and the separate
# large volume.
GOALS = [
    goal
    for goal in TARGETS
    if not goal[1].startswith("volume_") and not goal[1].endswith("peak_rss_bytes")
]


def run_shape(name: str, names: list[str], work: Path, size_gb: float, runs: int) -> dict[str, Any]:
    """Every round of every tool on one shape; the medians and the archive's facts."""
    shape, scale, _ = SHAPES[name]
    data = work / f"data-{name}"
    info = bench.make_archive(data, size_gb, shape, scale, name)
    study = bench.single_study(data)
    change = bench.Change(data, work / f"staging-{name}", study)
    env = bench.tool_env()
    results: dict[str, dict[str, list[float]]] = {n: defaultdict(list) for n in names}
    for r in range(runs):
        for tool_name in names[r % len(names) :] + names[: r % len(names)]:
            repo = work / "repos" / f"{tool_name}-{name}"
            print(f"{name}: round {r + 1}/{runs}: {tool_name}", file=sys.stderr)
            tool = TOOLS[tool_name](str(repo), env)
            bench.run_local(tool, repo, data, info, change, study, work, results[tool_name])
            shutil.rmtree(repo)
    return {
        "archive": info | {"study_bytes": dir_bytes(Path(study))},
        "local": {n: {k: statistics.median(v) for k, v in r.items()} for n, r in results.items()},
    }


def render(shapes: dict[str, Any], runs: int, command: str) -> str:
    out = [
        "## Other archive shapes",
        "",
        f"Reproduce: `{command}`. Median of {runs} runs, each tool in turn, on the same machine "
        "as the main table.",
        "",
    ]
    for name, result in shapes.items():
        local, a = result["local"], result["archive"]
        tools = list(local)
        out += [
            f"### {name}: {SHAPES[name][2]}",
            "",
            f"{a['bytes'] / 1e9:.2f} GB in {a['files']} files; the single study restored is "
            f"{a['study_bytes'] / 1e6:.1f} MB.",
            "",
            "| measurement | unit | " + " | ".join(tools) + " | vault vs restic |",
            "|---|---|" + "---|" * len(tools) + "---|",
        ]
        for key, label, unit, better in SHAPE_ROWS:
            vault, restic = local.get("vault", {}).get(key), local.get("restic", {}).get(key)
            cells = " | ".join(_value(local[t].get(key), unit) for t in tools)
            out.append(f"| {label} | {unit} | {cells} | {_ratio(vault, restic, better)} |")
        out.append("")
    out += goals_table(shapes)
    return "\n".join(out)


def goals_table(shapes: dict[str, Any]) -> list[str]:
    """One row a goal, one column a shape: the ratio measured and whether it meets the goal."""
    names = [n for n, s in shapes.items() if {"vault", "restic"} <= set(s["local"])]
    if not names:
        return []
    out = [
        "| goal (vault vs restic) | needed | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for label, key, better, needed in GOALS:
        cells = []
        for n in names:
            vault, restic = (shapes[n]["local"][t].get(key) for t in ("vault", "restic"))
            got = times_better(vault, restic, better)
            met = got is not None and got >= needed  # the measured ratio, not its rounded print
            cells.append(f"{_ratio(vault, restic, better)} {'met' if met else 'not met'}")
        out.append(f"| {label} | {needed:.1f}x | " + " | ".join(cells) + " |")
    return [*out, ""]


def add_options(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument(
        "--shapes", default=default, help=f"comma-separated, of {', '.join(SHAPES)}"
    )
    parser.add_argument("--shape-size-gb", type=float, default=0.5, help="each shape's archive")


def chosen(args: argparse.Namespace) -> list[str]:
    """The shapes asked for; a name not in SHAPES ends the run before anything is measured."""
    names = [s.strip() for s in args.shapes.split(",") if s.strip()]
    unknown = [s for s in names if s not in SHAPES]
    if unknown:
        raise SystemExit(f"unknown shape {unknown[0]!r}: choose from {', '.join(SHAPES)}")
    return names


def run_shapes(args: argparse.Namespace, names: list[str], work: Path) -> dict[str, Any]:
    return {s: run_shape(s, names, work, args.shape_size_gb, args.runs) for s in chosen(args)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_options(parser, ",".join(SHAPES))
    parser.add_argument("--runs", type=int, default=2, help="rounds per tool (median reported)")
    parser.add_argument("--tools", default="vault,restic,borg")
    parser.add_argument("--work", type=Path, default=Path("/var/tmp/vault-bench"))
    parser.add_argument("--out", type=Path, default=bench.ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    args = parser.parse_args(argv)
    chosen(args)
    names = [n.strip() for n in args.tools.split(",") if n.strip()]
    ensure_installed(names)
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(bench.ROOT / "vault")], check=True
    )
    shapes = run_shapes(args, names, args.work)
    if args.json:
        args.json.write_text(json.dumps(shapes, indent=2))
    command = "python scripts/bench_shapes.py " + " ".join(sys.argv[1:] if argv is None else argv)
    replace_section(args.out, SECTION, render(shapes, args.runs, command), title="Benchmarks")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
