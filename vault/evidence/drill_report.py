"""The drill evidence report for auditors: Markdown, JSON, or one self-contained HTML page
(inline CSS and SVG charts, no external assets, readable when printed). Pure rendering."""

from __future__ import annotations

import html
import json
import statistics
from typing import Any


def summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    passed = sum(1 for r in records if r["result"] == "PASS")
    rtos = [t for t in (_single_rto(r) for r in records) if t is not None]
    open_actions = [
        {"drill_id": r["drill_id"], "corrective_actions": r["corrective_actions"]}
        for r in records
        if r.get("corrective_actions") and not r.get("approved")
    ]
    return {
        "drills": len(records),
        "passed": passed,
        "pass_rate": round(passed / len(records), 3) if records else None,
        "median_single_study_rto_seconds": round(statistics.median(rtos), 3) if rtos else None,
        "worst_single_study_rto_seconds": max(rtos) if rtos else None,
        "single_study_rto_target_seconds": _target(records[-1]) if records else None,
        "open_corrective_actions": open_actions,
        "last_drill": records[-1]["started"] if records else None,
    }


def _single_rto(record: dict[str, Any]) -> float | None:
    for objective in record["objectives"]:
        if objective["name"] == "single-study RTO":
            return float(objective["measured_seconds"])
    return None


def _target(record: dict[str, Any]) -> float | None:
    for objective in record["objectives"]:
        if objective["name"] == "single-study RTO":
            return float(objective["target_seconds"])
    return None


def as_json(records: list[dict[str, Any]], chain_head: str = "") -> str:
    doc = {"summary": summary(records), "chain_head": chain_head or None, "drills": records}
    return json.dumps(doc, indent=2) + "\n"


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 10:
        return f"{value:.2f} s"
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


def _mb(value: float) -> str:
    return f"{value / 1e6:.1f} MB"


def as_markdown(records: list[dict[str, Any]], chain_head: str = "") -> str:
    s = summary(records)
    lines = [
        "# Restore drill evidence",
        "",
        *([f"Drill record chain head: {chain_head} (keep this copy: it anchors the chain)", ""]
          if chain_head else []),
        f"Drills: {s['drills']}, passed: {s['passed']}"
        + (f" ({s['pass_rate']:.0%})" if s["pass_rate"] is not None else ""),
        f"Single-study restore time: median {_seconds(s['median_single_study_rto_seconds'])}, "
        f"worst {_seconds(s['worst_single_study_rto_seconds'])}, target "
        f"{_seconds(s['single_study_rto_target_seconds'])}",
        f"Open corrective actions: {len(s['open_corrective_actions'])}",
        "",
    ]
    for r in records:
        lines += [
            f"## Drill {r['drill_id']} — {r['result']}",
            "",
            f"- When: {r['started']} to {r['finished']} (UTC); operator {r['operator']} "
            f"({r['os_user']}@{r['host']}), vault {r['tool_version']}",
            f"- Scenario: {r['scenario']}; snapshot {r['scope']['snapshot_id'][:8]} of "
            f"{r['scope']['snapshot_time']}",
            f"- Objective: {r['objective']}",
            f"- Sample: {r['sample']['method']} (seed {r['sample']['seed']})",
            f"- Restored {r['volume']['files']} files, {_mb(r['volume']['bytes'])} in "
            f"{_seconds(r['timing']['total_seconds'])}; first byte after "
            f"{_seconds(r['timing']['time_to_first_byte_seconds'])}; throughput "
            f"{_mb(r['volume']['throughput_bytes_per_second'])}/s; projected full restore "
            f"{_seconds(r['volume']['projected_full_restore_seconds'])}",
            f"- Scratch data deleted: {'yes' if r['scratch']['deleted'] else 'NO'}",
        ]
        if r.get("key_check"):
            lines.append(f"- Recovery-key check: {r['key_check']['result']}")
        lines += ["", "| objective | measured | target | result |", "|---|---|---|---|"]
        lines += [
            f"| {o['name']} | {_seconds(o['measured_seconds'])} | {_seconds(o['target_seconds'])} "
            f"| {o['result']} |"
            for o in r["objectives"]
        ]
        lines += [
            "",
            "| item | category | files | bytes | time | result |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {i['id']} | {i['category']} | {i['files']} | {i['bytes']} | "
            f"{_seconds(i['seconds'])} | {i['result']} |"
            for i in r["items"]
        ]
        if r["failure_reasons"]:
            lines += ["", "Failure reasons:"] + [f"- {f}" for f in r["failure_reasons"]]
        lines += [
            "",
            f"Lessons learned: {r['lessons_learned'] or '(none recorded)'}  ",
            f"Corrective actions: {r['corrective_actions'] or '(none recorded)'}  ",
            f"Reviewer: {r['reviewer'] or '(not yet reviewed)'}; approved: "
            f"{'yes' if r['approved'] else 'no'}",
            "",
        ]
    return "\n".join(lines)


def _bar_chart(
    title: str, bars: list[tuple[str, float, str]], target: float | None, unit: str
) -> str:
    width, height, left, bottom = 640, 220, 60, 40
    top = max([v for _, v, _ in bars] + ([target] if target else []) + [1e-9]) * 1.15
    step = (width - left - 20) / max(len(bars), 1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{html.escape(title)}">',
        f'<text x="{left}" y="16" font-size="13" font-weight="bold">{html.escape(title)}</text>',
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - 10}" y2="{height - bottom}" '
        'stroke="#333"/>',
    ]
    for n, (label, value, color) in enumerate(bars):
        h = (height - bottom - 30) * value / top
        x = left + n * step + step * 0.15
        parts.append(
            f'<rect x="{x:.1f}" y="{height - bottom - h:.1f}" width="{step * 0.7:.1f}" '
            f'height="{h:.1f}" fill="{color}"><title>{html.escape(label)}: {value:.2f} {unit}'
            "</title></rect>"
        )
        parts.append(
            f'<text x="{x + step * 0.35:.1f}" y="{height - bottom + 14}" font-size="10" '
            f'text-anchor="middle">{html.escape(label)}</text>'
        )
        parts.append(
            f'<text x="{x + step * 0.35:.1f}" y="{height - bottom - h - 3:.1f}" font-size="10" '
            f'text-anchor="middle">{value:.2f}</text>'
        )
    if target:
        y = height - bottom - (height - bottom - 30) * target / top
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{width - 10}" y2="{y:.1f}" stroke="#c00" '
            'stroke-dasharray="6,4"/>'
            f'<text x="{width - 12}" y="{y - 4:.1f}" font-size="10" fill="#c00" '
            f'text-anchor="end">target {target:.1f} {unit}</text>'
        )
    parts.append(
        f'<text x="14" y="{(height - bottom) / 2:.0f}" font-size="10" '
        f'transform="rotate(-90 14 {(height - bottom) / 2:.0f})">{html.escape(unit)}</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


def as_html(records: list[dict[str, Any]], chain_head: str = "") -> str:
    s = summary(records)
    body = as_markdown(records, chain_head)
    labels = [f"#{r['seq']}" for r in records]
    throughput = _bar_chart(
        "Restore throughput per drill",
        [
            (lab, r["volume"]["throughput_bytes_per_second"] / 1e6, "#2f6fb0")
            for lab, r in zip(labels, records, strict=True)
        ],
        None,
        "MB/s",
    )
    rto = _bar_chart(
        "Slowest single-study restore versus the RTO target",
        [
            (lab, (_single_rto(r) or 0.0), "#2e8b57" if r["result"] == "PASS" else "#c0392b")
            for lab, r in zip(labels, records, strict=True)
        ],
        s["single_study_rto_target_seconds"],
        "seconds",
    )
    rows = "".join(
        f"<tr><td>{r['seq']}</td><td>{html.escape(r['started'][:19])}</td>"
        f"<td>{html.escape(r['scenario'])}</td><td>{r['sample']['items']}</td>"
        f"<td>{_seconds(r['timing']['total_seconds'])}</td>"
        f"<td class='{r['result'].lower()}'>{r['result']}</td></tr>"
        for r in records
    )
    rate = f"{s['pass_rate']:.0%}" if s["pass_rate"] is not None else "-"
    median = _seconds(s["median_single_study_rto_seconds"])
    worst = _seconds(s["worst_single_study_rto_seconds"])
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Restore drill evidence</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222; }}
h1 {{ font-size: 1.6em; }} table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #bbb; padding: .3em .6em; text-align: left; }}
.pass {{ color: #1e7b34; font-weight: bold; }} .fail {{ color: #b3261e; font-weight: bold; }}
.cards {{ display: flex; gap: 1em; flex-wrap: wrap; }}
.card {{ border: 1px solid #ccc; border-radius: 6px; padding: .6em 1em; min-width: 10em; }}
.card b {{ display: block; font-size: 1.4em; }}
pre {{ white-space: pre-wrap; background: #f6f6f6; padding: 1em; border-radius: 6px; }}
@media print {{ pre {{ background: none; }} }}
</style></head><body>
<h1>Restore drill evidence</h1>
<p>Contingency-plan testing (HIPAA 164.308(a)(7)(ii)(D), NIST SP 800-53 CP-9(2)). Studies are
named only by their catalog ids; no patient information appears in this report.</p>
<div class="cards">
<div class="card">Drills run<b>{s["drills"]}</b></div>
<div class="card">Pass rate<b>{rate}</b></div>
<div class="card">Median single-study restore<b>{median}</b></div>
<div class="card">Worst single-study restore<b>{worst}</b></div>
<div class="card">Open corrective actions<b>{len(s["open_corrective_actions"])}</b></div>
</div>
<h2>Drills</h2>
<table><tr><th>#</th><th>started (UTC)</th><th>scenario</th><th>items</th><th>time</th>
<th>result</th></tr>{rows}</table>
{throughput}
{rto}
<h2>Records</h2>
<pre>{html.escape(body)}</pre>
</body></html>
"""
