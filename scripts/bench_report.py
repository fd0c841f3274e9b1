"""docs/benchmarks.md from a bench.py run: the generated part lives between markers, so the
hand-written analysis around it survives a re-run."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from doc_section import replace_section

SECTION = "bench:peers"

# (key, label, unit, better): better "high" for rates, "low" for times, sizes and memory.
ROWS = [
    ("initial_backup_mb_per_s", "initial backup", "MB/s", "high"),
    ("initial_backup_seconds", "initial backup", "s", "low"),
    ("initial_backup_cpu_seconds", "initial backup CPU", "s", "low"),
    ("initial_backup_peak_rss_bytes", "initial backup peak RSS", "MiB", "low"),
    ("nightly_nochange_seconds", "nightly backup, nothing changed", "s", "low"),
    ("nightly_change_seconds", "nightly backup, new study + header edit", "s", "low"),
    ("nightly_change_repo_growth_bytes", "repository growth from that change", "MB", "low"),
    ("full_restore_mb_per_s", "full restore", "MB/s", "high"),
    ("full_restore_seconds", "full restore", "s", "low"),
    ("full_restore_peak_rss_bytes", "full restore peak RSS", "MiB", "low"),
    ("study_restore_seconds", "single-study restore (largest CBCT series)", "s", "low"),
    ("volume_restore_mb_per_s", "one large CBCT volume restore", "MB/s", "high"),
    ("volume_restore_seconds", "one large CBCT volume restore", "s", "low"),
    ("volume_restore_peak_rss_bytes", "one large CBCT volume restore peak RSS", "MiB", "low"),
    ("check_read_data_seconds", "check, reading all data", "s", "low"),
    ("nightly_nochange_peak_rss_bytes", "no-change nightly peak RSS", "MiB", "low"),
    ("study_restore_peak_rss_bytes", "single-study restore peak RSS", "MiB", "low"),
    ("check_read_data_peak_rss_bytes", "check, reading all data, peak RSS", "MiB", "low"),
    ("repository_bytes", "repository size", "MB", "low"),
]

# Round 2's goals (issue 22): times as ratios too, so 2.0x is "half restic's time".
TARGETS = [
    ("initial backup throughput", "initial_backup_mb_per_s", "high", 3.0),
    ("full restore throughput", "full_restore_mb_per_s", "high", 2.0),
    ("single-study restore time (0.5x restic's)", "study_restore_seconds", "low", 2.0),
    ("check --read-data time (0.5x restic's)", "check_read_data_seconds", "low", 2.0),
    ("no-change nightly backup time", "nightly_nochange_seconds", "low", 1.0),
    ("one large CBCT volume restore", "volume_restore_mb_per_s", "high", 2.0),
    ("peak RSS, initial backup", "initial_backup_peak_rss_bytes", "low", 1.0),
    ("peak RSS, no-change nightly", "nightly_nochange_peak_rss_bytes", "low", 1.0),
    ("peak RSS, full restore", "full_restore_peak_rss_bytes", "low", 1.0),
    ("peak RSS, single-study restore", "study_restore_peak_rss_bytes", "low", 1.0),
    ("peak RSS, check --read-data", "check_read_data_peak_rss_bytes", "low", 1.0),
]

# Against borg, which stores least of the peers: vault's bytes must be no more than borg's.
BORG_TARGETS = [
    ("repository size", "repository_bytes"),
    ("bytes added by the nightly change", "nightly_change_repo_growth_bytes"),
]


def _value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "MiB":
        return f"{value / 2**20:.0f}"
    if unit == "MB":
        return f"{value / 1e6:.1f}"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def times_better(vault: float | None, restic: float | None, better: str) -> float | None:
    """How many times better vault is (>1: vault ahead); None without both values."""
    if not vault or not restic:
        return None
    return vault / restic if better == "high" else restic / vault


def _ratio(vault: float | None, restic: float | None, better: str) -> str:
    got = times_better(vault, restic, better)
    return "-" if got is None else f"{got:.2f}x"


def render(doc: dict[str, Any]) -> str:
    local, names = doc["local"], list(doc["local"])
    m, a = doc["machine"], doc["archive"]
    out = [
        f"## Results: {dt.date.today().isoformat()}, {a['bytes'] / 1e9:.2f} GB, "
        f"median of {doc['runs']} runs",
        "",
        f"Reproduce: `{doc['command']}`",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory']} RAM, {m['os']}, Python "
        f"{m['python']}. Versions: " + ", ".join(f"{v}" for v in doc["versions"].values()) + ".",
        "",
        f"Archive: {a['files']} files in {a['practices']} synthetic practices; the single study "
        f"restored is {a['study_bytes'] / 1e6:.1f} MB; the nightly change adds a "
        f"{a['new_study_bytes'] / 1e6:.1f} MB study and rewrites one multi-frame volume's header"
        + (
            f"; the large CBCT volume restored on its own is one file of "
            f"{a['volume_bytes'] / 1e9:.2f} GB."
            if a.get("volume_bytes")
            else "."
        ),
        "",
        "| measurement | unit | " + " | ".join(names) + " | vault vs restic |",
        "|---|---|" + "---|" * len(names) + "---|",
    ]
    for key, label, unit, better in ROWS:
        values = [local[n].get(key) for n in names]
        ratio = _ratio(local.get("vault", {}).get(key), local.get("restic", {}).get(key), better)
        out.append(
            f"| {label} | {unit} | " + " | ".join(_value(v, unit) for v in values) + f" | {ratio} |"
        )
    out += ["", '"vault vs restic" is how many times better vault is (above 1: vault ahead).', ""]
    if "vault" in local and "restic" in local:
        out += [
            "| target (vault vs restic, same run) | needed | measured | met |",
            "|---|---|---|---|",
        ]
        for label, key, better, needed in TARGETS:
            got = times_better(local["vault"].get(key), local["restic"].get(key), better)
            if got is None:
                continue
            out.append(
                f"| {label} | {needed:.1f}x | {got:.2f}x | {'yes' if got >= needed else 'NO'} |"
            )
        for label, key in BORG_TARGETS:
            v, b = local["vault"].get(key), local.get("borg", {}).get(key)
            if v and b:
                met = "yes" if v <= b else "NO"
                out.append(f"| {label} | at most borg's | {v / b:.2f}x borg's | {met} |")
        out.append("")
    p = doc["primitives"]
    out += [
        f"Primitives, one core, on {p['sample_bytes'] / 1e6:.0f} MB of the archive's DICOM "
        f"(zstd ratio {p['zstd_ratio']}):",
        "",
        "| step | MB/s |",
        "|---|---|",
    ]
    out += [f"| {k} | {v} |" for k, v in p["single_core_mb_per_s"].items()]
    vault_rate = local.get("vault", {}).get("initial_backup_mb_per_s")
    share = (
        f" — vault's initial backup reaches {vault_rate / p['pipeline_ceiling_mb_per_s']:.0%} of it"
        if vault_rate
        else ""
    )
    out += [
        "",
        "Every byte passes all of these once: one core could do "
        f"{p['pipeline_one_core_mb_per_s']} MB/s; {p['cores']} perfectly parallel cores "
        f"{p['pipeline_ceiling_mb_per_s']} MB/s{share}.",
        "",
    ]
    if doc["s3"]:
        out += [
            "S3 (SeaweedFS on loopback, same machine):",
            "",
            "| | backup MB/s | restore MB/s | backup requests | restore requests |",
            "|---|---|---|---|---|",
        ]
        for name, r in doc["s3"].items():
            out.append(
                f"| {name} | {_value(r.get('backup_mb_per_s'), 'MB/s')} | "
                f"{_value(r.get('restore_mb_per_s'), 'MB/s')} | "
                f"{r.get('backup_requests', 0):.0f} | {r.get('restore_requests', 0):.0f} |"
            )
        vault_s3, restic_s3 = doc["s3"].get("vault", {}), doc["s3"].get("restic", {})
        if vault_s3.get("restore_mb_per_s") and restic_s3.get("restore_mb_per_s"):
            got = vault_s3["restore_mb_per_s"] / restic_s3["restore_mb_per_s"]
            out += [
                "",
                f"S3 full restore, vault vs restic: {got:.2f}x (round-2 target 2.0x: "
                f"{'met' if got >= 2.0 else 'NOT met'}).",
            ]
        out.append("")
    return "\n".join(out)


def write_report(path: Path, doc: dict[str, Any]) -> None:
    replace_section(path, SECTION, render(doc), title="Benchmarks")
