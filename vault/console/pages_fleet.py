"""The fleet page (every repository OK/WARN/FAIL with its reasons) and one repository's
overview (findings, backup sizes over time, its snapshots, paged)."""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.responses import Response

from vault.console.served import fleet_row
from vault.console.web import Ctx
from vault.evidence import drill_report
from vault.units import human_bytes, human_seconds, whole_number

PAGE_SIZE = 50


def _when(iso: str | None) -> str:
    return (iso or "")[:16].replace("T", " ") or "never"


def _ago(seconds: float | None) -> str:
    return "never" if seconds is None else f"{human_seconds(max(seconds, 0))} ago"


def fleet(ctx: Ctx) -> Response:
    now = datetime.now(UTC)
    rows = []
    for name in sorted(ctx.console.served):
        row = fleet_row(ctx.console.served[name], now)
        st = row.status
        rows.append(
            {
                "name": name,
                "level": row.level,
                "findings": [f for f in row.findings if f.level != "OK"],
                "last_backup": _ago(st.latest_age_seconds) if st else "unknown",
                "replicas": [
                    f"{r['location']}: {human_seconds(r['lag_seconds'])} behind"
                    + (" (last copy failed)" if r.get("failed_since") else "")
                    for r in st.replicas
                ]
                if st
                else [],
                "last_check": (
                    f"{_when((st.last_check or {}).get('time'))} "
                    f"{(st.last_check or {}).get('outcome', '')}"
                )
                if st
                else "unknown",
                "last_drill": (
                    f"{_when(st.last_drill['started'])} {st.last_drill['result']}"
                    if st and st.last_drill
                    else "never"
                ),
                "actions": sum(len(a["corrective_actions"]) for a in st.open_actions) if st else 0,
                "rotation": st.keys.rotation if st else "unknown",
            }
        )
    worst = next((lv for lv in ("FAIL", "WARN") if any(r["level"] == lv for r in rows)), "OK")
    return ctx.render("fleet.html", rows=rows, worst=worst, fingerprint=ctx.console.fingerprint)


def overview(ctx: Ctx) -> Response:
    served = ctx.served()
    st = served.status()
    snapshots = served.snapshots()
    page = max(whole_number(ctx.query("page", "1"), 6) or 1, 1)
    newest_first = list(reversed(snapshots))
    shown = newest_first[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
    recent = snapshots[-30:]
    largest = max((s.stats.bytes for s in recent), default=0)
    unit, scale = ("GB", 1e9) if largest >= 1e9 else ("MB", 1e6)
    sizes = drill_report.bar_chart(
        f"Backup size ({unit}) of the last {len(recent)} snapshot(s)",
        [(s.time.strftime("%m-%d"), s.stats.bytes / scale, "#2f6fb0") for s in recent],
        None,
        unit,
    )
    added = drill_report.bar_chart(
        f"New data stored (MB) by each of the last {len(recent)} snapshot(s)",
        [(s.time.strftime("%m-%d"), s.stats.bytes_stored / 1e6, "#2e8b57") for s in recent],
        None,
        "MB",
    )
    return ctx.render(
        "repository.html",
        name=served.name,
        st=st,
        findings=st.findings,
        snapshots=shown,
        page=page,
        pages=max((len(snapshots) + PAGE_SIZE - 1) // PAGE_SIZE, 1),
        total=len(snapshots),
        charts=[sizes, added] if snapshots else [],
        human_bytes=human_bytes,
    )
