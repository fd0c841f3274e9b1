"""vault and restic over a practice's link to a cloud region, for `scripts/bench.py`.

Loopback S3 hides latency. Here each tool talks to SeaweedFS through the test proxy shaped as a
wide-area link (tests/faultproxy.py `Link`): one round trip added to every request, and request
and response bodies through shared up and down pipes of fixed rates. For each round trip given
(25 and 80 ms by default: a practice to a nearby or a distant region) and each tool: the initial
backup, a nightly backup after the bench's change (a new study, a header edit), a full restore
and a single-study restore. Reported: time, what crossed the link, the share of the link's rate
that was used while the step ran (limited by the link, a tool gets near 100 %; limited by round
trips, far less) and requests per GB of the archive.

What it does not model: TCP's own slow start and congestion control (each request is a round
trip plus its bytes at the link's rate), loss, and the cost of new connections (both tools keep
theirs open).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_peers import TOOLS, Measured, dir_bytes

MBIT = 1e6 / 8  # bytes a second


def run_network(
    names: list[str],
    data: Path,
    archive_bytes: int,
    change: Any,  # bench.Change: apply() and undo() the nightly change
    study: str,
    scratch: Path,
    round_trips: list[float],
    up_mbit: float,
    down_mbit: float,
) -> dict[str, Any]:
    from tests.faultproxy import FaultProxy, Link
    from tests.s3server import start_server

    shutil.rmtree(scratch / "seaweedfs-net", ignore_errors=True)
    server = start_server(scratch / "seaweedfs-net")
    runs: list[dict[str, Any]] = []
    try:
        host, port = server.endpoint.removeprefix("http://").split(":")
        for rtt in round_trips:
            link = Link(rtt, up_mbit * MBIT, down_mbit * MBIT)
            for name in [n for n in names if n in ("vault", "restic")]:
                proxy = FaultProxy(host, int(port))
                try:
                    bucket = f"net-{name}-{int(rtt * 1000)}ms"
                    server.client().create_bucket(Bucket=bucket)
                    env = {**os.environ, **server.env(), "AWS_ENDPOINT_URL_S3": proxy.endpoint}
                    repo = (
                        f"s3://{bucket}/repo"
                        if name == "vault"
                        else f"s3:{proxy.endpoint}/{bucket}/repo"
                    )
                    tool = TOOLS[name](repo, env)
                    tool.init()
                    proxy.shape(link)
                    steps = _steps(tool, proxy, link, data, archive_bytes, change, study, scratch)
                    runs.append({"tool": name, "round_trip_ms": rtt * 1000, "steps": steps})
                finally:
                    proxy.close()
    finally:
        server.stop()
    return {
        "archive_bytes": archive_bytes,
        "up_mbit": up_mbit,
        "down_mbit": down_mbit,
        "runs": runs,
    }


def _steps(
    tool: Any,
    proxy: Any,
    link: Any,
    data: Path,
    archive_bytes: int,
    change: Any,
    study: str,
    scratch: Path,
) -> dict[str, dict[str, float]]:
    target = scratch / "net-restore"
    shutil.rmtree(target, ignore_errors=True)

    def step(run: Callable[[], Measured]) -> dict[str, float]:
        requests, up, down = proxy.requests, proxy.bytes_up, proxy.bytes_down
        measured = run()
        sent, received = proxy.bytes_up - up, proxy.bytes_down - down
        # The link's busier direction sets the share: uploads for a backup, downloads for a
        # restore.
        share = max(
            sent / measured.seconds / link.up_bytes_per_second,
            received / measured.seconds / link.down_bytes_per_second,
        )
        return {
            "seconds": measured.seconds,
            "requests": proxy.requests - requests,
            "requests_per_gb": (proxy.requests - requests) / (archive_bytes / 1e9),
            "bytes_up": sent,
            "bytes_down": received,
            "link_share": share,
            "peak_rss_bytes": measured.peak_rss_bytes,
        }

    out = {"initial_backup": step(lambda: tool.backup(data))}
    change.apply()
    try:
        out["nightly_change"] = step(lambda: tool.backup(data))
    finally:
        change.undo()
    out["full_restore"] = step(lambda: tool.restore(target))
    if dir_bytes(target) < archive_bytes:
        raise RuntimeError(f"{tool.name} restored {dir_bytes(target)} of {archive_bytes} bytes")
    shutil.rmtree(target)
    out["study_restore"] = step(lambda: tool.restore(target, include=study))
    if dir_bytes(target / study.lstrip("/")) != dir_bytes(Path(study)):
        raise RuntimeError(f"{tool.name} did not restore the study whole")
    shutil.rmtree(target)
    return out


STEPS = [
    ("initial_backup", "initial backup"),
    ("nightly_change", "nightly, new study + header edit"),
    ("full_restore", "full restore"),
    ("study_restore", "single-study restore"),
]


def render(net: dict[str, Any]) -> list[str]:
    """The network section of docs/benchmarks.md."""
    out = [
        f"Over a shaped link (the test proxy: a round trip added to each request, "
        f"{net['up_mbit']:.0f} Mbit/s up, {net['down_mbit']:.0f} Mbit/s down), on an archive "
        f'of {net["archive_bytes"] / 1e9:.2f} GB. "link" is the share of the link\'s rate '
        "used while the step ran, in the direction it mostly went:",
        "",
        "| round trip | step | tool | s | link | requests | requests/GB | MB up | MB down |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    by_key = {(r["round_trip_ms"], r["tool"]): r["steps"] for r in net["runs"]}
    for rtt in sorted({r["round_trip_ms"] for r in net["runs"]}):
        for key, label in STEPS:
            for tool in ("vault", "restic"):
                s = by_key.get((rtt, tool), {}).get(key)
                if s is None:
                    continue
                out.append(
                    f"| {rtt:.0f} ms | {label} | {tool} | {s['seconds']:.1f} | "
                    f"{s['link_share']:.0%} | {s['requests']:.0f} | {s['requests_per_gb']:.0f} | "
                    f"{s['bytes_up'] / 1e6:.1f} | {s['bytes_down'] / 1e6:.1f} |"
                )
    out += ["", "| round trip | step | vault vs restic (time) |", "|---|---|---|"]
    for rtt in sorted({r["round_trip_ms"] for r in net["runs"]}):
        for key, label in STEPS:
            v = by_key.get((rtt, "vault"), {}).get(key)
            r = by_key.get((rtt, "restic"), {}).get(key)
            if v and r:
                out.append(f"| {rtt:.0f} ms | {label} | {r['seconds'] / v['seconds']:.2f}x |")
    out.append("")
    return out


SECTION = "bench:network"


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json
    import subprocess
    import sys

    import bench
    from bench_peers import ensure_installed
    from doc_section import replace_section

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_options(parser)
    parser.add_argument("--work", type=Path, default=Path("/var/tmp/vault-bench"))
    parser.add_argument("--out", type=Path, default=bench.ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    args = parser.parse_args(argv)
    ensure_installed(["vault", "restic"])
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(bench.ROOT / "vault")], check=True
    )
    net = from_options(args, ["vault", "restic"], args.work)
    command = "python scripts/bench_network.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.json:
        args.json.write_text(json.dumps(net, indent=2))
    replace_section(args.out, SECTION, publish(net, command), title="Benchmarks")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


def add_options(parser: Any) -> None:
    parser.add_argument(
        "--network-size-gb",
        type=float,
        default=0.5,
        help="archive for the runs over a shaped link (0: no network runs)",
    )
    parser.add_argument("--round-trips-ms", default="25,80", help="one run per round trip")
    parser.add_argument("--up-mbit", type=float, default=100.0, help="uplink (practice → cloud)")
    parser.add_argument("--down-mbit", type=float, default=300.0, help="downlink")


def from_options(args: Any, names: list[str], work: Path) -> dict[str, Any]:
    """Generate (or reuse) the network archive and run every round trip on it."""
    import bench

    data = work / "net-data"
    info = bench.make_archive(data, args.network_size_gb)
    study = bench.single_study(data)
    change = bench.Change(data, work / "net-staging", study)
    return run_network(
        names,
        data,
        int(info["bytes"]),
        change,
        study,
        work,
        [float(ms) / 1000 for ms in args.round_trips_ms.split(",") if ms.strip()],
        args.up_mbit,
        args.down_mbit,
    )


def publish(net: dict[str, Any], command: str) -> str:
    return "\n".join(["## Over a network", "", f"Reproduce: `{command}`", "", *render(net)])


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
