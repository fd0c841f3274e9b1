"""One marked section of a Markdown page, rewritten in place: how the benchmark and campaign
scripts publish their tables (`<!-- NAME:start -->` … `<!-- NAME:end -->`) without touching
the prose around them."""

from __future__ import annotations

from pathlib import Path


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def replace_section(path: Path, name: str, body: str, *, title: str) -> None:
    """Put `body` between the NAME markers of `path` (appended, or a new page titled `title`,
    when the markers or the page do not exist yet)."""
    start, end = markers(name)
    section = f"{start}\n{body.strip(chr(10))}\n{end}"
    text = path.read_text(encoding="utf-8") if path.exists() else f"# {title}\n"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text, encoding="utf-8")
