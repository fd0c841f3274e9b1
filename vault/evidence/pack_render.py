"""The evidence pack as Markdown or one self-contained, printable HTML page. Pure rendering."""

from __future__ import annotations

import html

from vault.evidence.pack import EvidencePack, Section

INTRO = (
    "Evidence for the contingency plan of HIPAA 164.308(a)(7): data backup, disaster recovery "
    "and testing, with the encryption (164.312(a)(2)(iv)) and audit controls (164.312(b)) that "
    "protect the backups. It holds no patient information."
)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def as_markdown(pack: EvidencePack, intro: str = INTRO) -> str:
    out = [f"# {pack.title}", "", f"Generated {pack.generated}.", "", intro, ""]
    if pack.level:
        out += [f"**Overall status: {pack.level}**", ""]
    for section in pack.sections:
        out += [f"## {section.title}", ""]
        out += [f"- **{k}:** {v}" for k, v in section.facts]
        if section.facts:
            out.append("")
        for paragraph in section.text:
            out += [paragraph, ""]
        if section.headers and section.rows:
            out.append("| " + " | ".join(section.headers) + " |")
            out.append("|" + "---|" * len(section.headers))
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in section.rows]
            out.append("")
    return "\n".join(out)


def _html_section(section: Section) -> str:
    parts = [f"<h2>{html.escape(section.title)}</h2>"]
    if section.facts:
        parts.append(
            "<dl>"
            + "".join(
                f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in section.facts
            )
            + "</dl>"
        )
    parts += [f"<p>{html.escape(p)}</p>" for p in section.text]
    if section.headers and section.rows:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in section.headers)
        body = "".join(
            "<tr>"
            + "".join(f"<td class='{html.escape(c.lower())}'>{html.escape(c)}</td>" for c in row)
            + "</tr>"
            for row in section.rows
        )
        parts.append(f"<table><tr>{head}</tr>{body}</table>")
    return "\n".join(parts)


def as_html(pack: EvidencePack, intro: str = INTRO) -> str:
    sections = "\n".join(_html_section(s) for s in pack.sections)
    level = html.escape(pack.level)
    status = (
        f'<p>Overall status: <span class="level {level.lower()}">{level}</span></p>'
        if level
        else ""
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(pack.title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222; }}
h1 {{ font-size: 1.6em; }} h2 {{ margin-top: 1.6em; border-bottom: 1px solid #ddd; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #bbb; padding: .3em .6em; text-align: left; vertical-align: top; }}
dl {{ display: grid; grid-template-columns: max-content minmax(0, 1fr); gap: .3em 1em; }}
dt {{ font-weight: bold; }} dd {{ margin: 0; overflow-wrap: anywhere; }}
.pass, .ok {{ color: #1e7b34; font-weight: bold; }}
.fail {{ color: #b3261e; font-weight: bold; }} .warn {{ color: #a15c00; font-weight: bold; }}
.level {{ display: inline-block; padding: .2em .8em; border: 2px solid; border-radius: 6px; }}
</style></head><body>
<h1>{html.escape(pack.title)}</h1>
<p>Generated {html.escape(pack.generated)}.</p>
<p>{html.escape(intro)}</p>
{status}
{sections}
</body></html>
"""
