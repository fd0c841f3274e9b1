"""The drill evidence report for auditors: Markdown, JSON, or one self-contained HTML page
(inline CSS and SVG charts, no external assets, readable when printed). Pure rendering."""

from __future__ import annotations

import html
import json
import math
import statistics
from typing import Any

from vault.units import counted, human_seconds


def pacs_summary(record: dict[str, Any]) -> str | None:
    """One line for the drill report: what the PACS check found, or None without one."""
    checks = [i["pacs"] for i in record.get("items", []) if i.get("pacs")]
    if not checks:
        return None
    found = sum(c["instances_found"] for c in checks)
    expected = sum(c["instances_expected"] for c in checks)
    verdict = "FAIL" if any(c["result"] == "FAIL" for c in checks) else "PASS"
    return (
        f"{verdict}: {found} of {counted(expected, 'instance')} of "
        f"{counted(len(checks), 'study', 'studies')} found in "
        f"PACS {checks[0]['endpoint']} by C-FIND after C-STORE"
    )


def database_summary(record: dict[str, Any]) -> str | None:
    """One line for reports: what the database check proved, or None without one."""
    checks = record.get("databases")
    if checks is None:
        return None
    if not checks:
        return "FAIL: no database dump was loaded"
    verdict = "FAIL" if any(c["result"] == "FAIL" for c in checks) else "PASS"
    parts = [
        f"{c['dump']} loaded in {c['load_seconds']:.1f}s, {c.get('tables', 0)} tables, "
        f"{c.get('rows', 0)} rows" + ("" if c["result"] == "PASS" else " (checks failed)")
        if "load_seconds" in c
        else f"{c['dump']} did not load: {'; '.join(c.get('problems', [])) or 'no reason'}"
        for c in checks
    ]
    return f"{verdict}: " + "; ".join(parts)


def summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    passed = sum(1 for r in records if r["result"] == "PASS")
    rtos = [t for t in (single_rto(r) for r in records) if t is not None]
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


def single_rto(record: dict[str, Any]) -> float | None:
    for objective in record["objectives"]:
        if objective["name"] == "single-study RTO" and objective["measured_seconds"] is not None:
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


def _measured(objective: dict[str, Any]) -> str:
    if objective["measured_seconds"] is None:
        return str(objective.get("note") or "-")
    return human_seconds(objective["measured_seconds"])


def _mb(value: float) -> str:
    if value < 100_000:
        return f"{value / 1e3:.1f} kB"
    return f"{value / 1e6:.1f} MB"


def as_markdown(records: list[dict[str, Any]], chain_head: str = "") -> str:
    s = summary(records)
    lines = [
        "# Restore drill evidence",
        "",
        *(
            [f"Drill record chain head: {chain_head} (keep this copy: it anchors the chain)", ""]
            if chain_head
            else []
        ),
        f"Drills: {s['drills']}, passed: {s['passed']}"
        + (f" ({s['pass_rate']:.0%})" if s["pass_rate"] is not None else ""),
        f"Single-study restore time: median {human_seconds(s['median_single_study_rto_seconds'])}, "
        f"worst {human_seconds(s['worst_single_study_rto_seconds'])}, target "
        f"{human_seconds(s['single_study_rto_target_seconds'])}",
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
            f"{human_seconds(r['timing']['total_seconds'])}; first byte after "
            f"{human_seconds(r['timing']['time_to_first_byte_seconds'])}; throughput "
            f"{_mb(r['volume']['throughput_bytes_per_second'])}/s; projected full restore "
            f"{human_seconds(r['volume']['projected_full_restore_seconds'])}",
            f"- Scratch data deleted: {'yes' if r['scratch']['deleted'] else 'NO'}",
        ]
        if r.get("key_check"):
            lines.append(f"- Recovery-key check: {r['key_check']['result']}")
        if pacs_summary(r):
            lines.append(f"- PACS check: {pacs_summary(r)}")
        if database_summary(r):
            lines.append(f"- database check: {database_summary(r)}")
        lines += ["", "| objective | measured | target | result |", "|---|---|---|---|"]
        lines += [
            f"| {o['name']} | {_measured(o)} | {human_seconds(o['target_seconds'])} "
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
            f"{human_seconds(i['seconds'])} | {i['result']} |"
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


def bar_chart(
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
            f'text-anchor="middle">{value:.3g}</text>'
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


def _short(drill_id: str) -> str:
    """How both reports name a drill: the first 8 characters of its id."""
    return str(drill_id)[:8]


def log_chart(title: str, bars: list[tuple[str, float, str]], target: float | None) -> str:
    """Seconds on a log scale from 10 ms up, so a 0.05 s restore and a 15 min target both
    read; every bar is labelled with its value and its share of the target."""
    width, height, left, bottom, top_pad = 640, 240, 70, 40, 30
    floor = 0.001
    values = [max(v, floor) for _, v, _ in bars] + ([target] if target else []) + [1.0]
    low, high = math.log10(floor), math.log10(max(values)) + 0.3
    plot = height - bottom - top_pad

    def y_of(seconds: float) -> float:
        return height - bottom - plot * (math.log10(max(seconds, floor)) - low) / (high - low)

    step = (width - left - 20) / max(len(bars), 1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{html.escape(title)}">',
        f'<text x="{left}" y="16" font-size="13" font-weight="bold">{html.escape(title)}</text>',
    ]
    tick = floor
    while math.log10(tick) <= high:
        y = y_of(tick)
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{width - 10}" y2="{y:.1f}" stroke="#ddd"/>'
            f'<text x="{left - 4}" y="{y + 3:.1f}" font-size="9" text-anchor="end">'
            f"{human_seconds(tick)}</text>"
        )
        tick *= 10
    for n, (label, value, color) in enumerate(bars):
        x = left + n * step + step * 0.15
        y = y_of(value)
        share = f" ({value / target:.2%} of target)" if target else ""
        parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{step * 0.7:.1f}" '
            f'height="{height - bottom - y:.1f}" fill="{color}"><title>{html.escape(label)}: '
            f"{human_seconds(value)}{share}</title></rect>"
            f'<text x="{x + step * 0.35:.1f}" y="{height - bottom + 14}" font-size="10" '
            f'text-anchor="middle">{html.escape(label)}</text>'
            f'<text x="{x + step * 0.35:.1f}" y="{y - 3:.1f}" font-size="10" '
            f'text-anchor="middle">{human_seconds(value)}</text>'
        )
    if target:
        y = y_of(target)
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{width - 10}" y2="{y:.1f}" stroke="#c00" '
            'stroke-dasharray="6,4"/>'
            f'<text x="{width - 12}" y="{y - 4:.1f}" font-size="10" fill="#c00" '
            f'text-anchor="end">RTO target {human_seconds(target)}</text>'
        )
    parts.append(
        f'<text x="14" y="{(height - bottom) / 2:.0f}" font-size="10" '
        f'transform="rotate(-90 14 {(height - bottom) / 2:.0f})">seconds (log scale)</text>'
        "</svg>"
    )
    return "".join(parts)


def _table(headers: list[str], rows: list[list[str]], result_column: int | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers) if any(headers) else ""
    body = []
    for row in rows:
        cells = []
        for n, cell in enumerate(row):
            result = n == result_column and cell in ("PASS", "FAIL")
            css = f" class='{cell.lower()}'" if result else ""
            cells.append(f"<td{css}>{html.escape(cell)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    header = f"<tr>{head}</tr>" if head else ""
    return f"<table>{header}{''.join(body)}</table>"


def _review(r: dict[str, Any], key: str, empty: str) -> str:
    value = r.get(key)
    if value in (None, "", False):
        return empty
    when = str(r.get(f"{key}_at", ""))[:10]
    shown = "yes" if value is True else str(value)
    return f"{shown} ({when})" if when else shown


def review_summary(r: dict[str, Any]) -> str:
    """Who reviewed a drill and whether it was approved, with dates, in one line."""
    if not r.get("reviewer") and not r.get("approved"):
        return "not reviewed"
    parts = [f"by {_review(r, 'reviewer', '(reviewer not named)')}"]
    parts.append(
        f"approved {str(r.get('approved_at', ''))[:10]}".rstrip()
        if r.get("approved")
        else "not approved"
    )
    if r.get("witness"):
        parts.append(f"witness {r['witness']}")
    return ", ".join(parts)


def _record_html(r: dict[str, Any]) -> str:
    facts = [
        ["When (UTC)", f"{r['started'][:19]} to {r['finished'][:19]}"],
        ["Operator", f"{r['operator']} ({r['os_user']}@{r['host']}), vault {r['tool_version']}"],
        ["Scenario", str(r["scenario"])],
        ["Snapshot", f"{r['scope']['snapshot_id'][:8]} of {r['scope']['snapshot_time'][:19]}"],
        ["Objective", str(r["objective"])],
        ["Sample", f"{r['sample']['method']} (seed {r['sample']['seed']})"],
        [
            "Restored",
            f"{r['volume']['files']} files, {_mb(r['volume']['bytes'])} in "
            f"{human_seconds(r['timing']['total_seconds'])} "
            f"({_mb(r['volume']['throughput_bytes_per_second'])}/s)",
        ],
        ["Projected full restore", human_seconds(r["volume"]["projected_full_restore_seconds"])],
        ["Scratch data deleted", "yes" if r["scratch"]["deleted"] else "NO"],
    ]
    if r.get("key_check"):
        check = r["key_check"]
        facts.append(["Recovery-key check", f"{check['result']} ({check.get('reason', 'opened')})"])
    if pacs_summary(r):
        facts.append(["PACS check", str(pacs_summary(r))])
    if database_summary(r):
        facts.append(["database check", str(database_summary(r))])
    facts += [
        ["Lessons learned", _review(r, "lessons_learned", "(none recorded)")],
        ["Corrective actions", _review(r, "corrective_actions", "(none recorded)")],
        ["Reviewed by", _review(r, "reviewer", "(not yet reviewed)")],
        ["Witness", _review(r, "witness", "(none recorded)")],
        ["Approved", _review(r, "approved", "no")],
    ]
    objectives = [
        [o["name"], _measured(o), human_seconds(o["target_seconds"]), o["result"]]
        for o in r["objectives"]
    ]
    items = [
        [
            str(i["id"]),
            str(i["category"]),
            str(i["files"]),
            _mb(i["bytes"]),
            human_seconds(i["seconds"]),
            str(i["result"]),
        ]
        for i in r["items"]
    ]
    reasons = "".join(f"<li>{html.escape(f)}</li>" for f in r["failure_reasons"])
    return (
        f"<section class='record'><h3>Drill {_short(r['drill_id'])} "
        f"<span class='{r['result'].lower()}'>{r['result']}</span></h3>"
        + _table(["", ""], facts)
        + _table(["objective", "measured", "target", "result"], objectives, 3)
        + _table(["item", "category", "files", "size", "time", "result"], items, 5)
        + (f"<p>Failure reasons:</p><ul>{reasons}</ul>" if reasons else "")
        + "</section>"
    )


def as_html(records: list[dict[str, Any]], chain_head: str = "") -> str:
    s = summary(records)
    labels = [_short(r["drill_id"]) for r in records]
    throughput = bar_chart(
        "Restore throughput per drill",
        [
            (lab, r["volume"]["throughput_bytes_per_second"] / 1e6, "#2f6fb0")
            for lab, r in zip(labels, records, strict=True)
        ],
        None,
        "MB/s",
    )
    rto = log_chart(
        "Slowest single-study restore versus the RTO target",
        [
            (lab, (single_rto(r) or 0.0), "#2e8b57" if r["result"] == "PASS" else "#c0392b")
            for lab, r in zip(labels, records, strict=True)
            if single_rto(r) is not None
        ],
        s["single_study_rto_target_seconds"],
    )
    overview = _table(
        ["drill", "started (UTC)", "scenario", "items", "time", "result", "approved"],
        [
            [
                _short(r["drill_id"]),
                r["started"][:19].replace("T", " "),
                str(r["scenario"]),
                str(r["sample"]["items"]),
                human_seconds(r["timing"]["total_seconds"]),
                str(r["result"]),
                _review(r, "approved", "no"),
            ]
            for r in records
        ],
        5,
    )
    rate = f"{s['pass_rate']:.0%}" if s["pass_rate"] is not None else "-"
    median = human_seconds(s["median_single_study_rto_seconds"])
    worst = human_seconds(s["worst_single_study_rto_seconds"])
    anchor = (
        f"<p class='anchor'>Drill record chain head: {html.escape(chain_head)} — keep this "
        "page: it anchors the chain.</p>"
        if chain_head
        else ""
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Restore drill evidence</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222; }}
h1 {{ font-size: 1.6em; }} table {{ border-collapse: collapse; margin: .6em 0 1em; }}
td, th {{ border: 1px solid #bbb; padding: .3em .6em; text-align: left; vertical-align: top; }}
.pass {{ color: #1e7b34; font-weight: bold; }} .fail {{ color: #b3261e; font-weight: bold; }}
.cards {{ display: flex; gap: 1em; flex-wrap: wrap; }}
.card {{ border: 1px solid #ccc; border-radius: 6px; padding: .6em 1em; min-width: 10em; }}
.card b {{ display: block; font-size: 1.4em; }}
.record {{ border-top: 2px solid #ddd; margin-top: 1.5em; }}
.anchor {{ font-family: monospace; font-size: .85em; overflow-wrap: anywhere; }}
svg {{ max-width: 100%; }}
@media print {{ .record {{ break-inside: avoid; }} }}
</style></head><body>
<h1>Restore drill evidence</h1>
<p>Contingency-plan testing (HIPAA 164.308(a)(7)(ii)(D), NIST SP 800-53 CP-9(2)). Studies are
named only by their catalog ids; no patient information appears in this report.</p>
{anchor}
<div class="cards">
<div class="card">Drills run<b>{s["drills"]}</b></div>
<div class="card">Pass rate<b>{rate}</b></div>
<div class="card">Median single-study restore<b>{median}</b></div>
<div class="card">Worst single-study restore<b>{worst}</b></div>
<div class="card">Open corrective actions<b>{len(s["open_corrective_actions"])}</b></div>
</div>
<h2>Drills</h2>
{overview}
{throughput}
{rto}
<h2>Records</h2>
{"".join(_record_html(r) for r in records)}
</body></html>
"""
