"""README.md stays true to itself and to the code: its table of contents links every section,
and its settings table is the one generated from the settings object."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from genq.common.settings import EVERY_PROCESS, READ_BY, Settings
from ops import readme_settings

README = Path(__file__).resolve().parents[2] / "README.md"
TOC_START = "**Contents**"
LINK = re.compile(r"\]\(#([^)]*)\)")


def lines_outside_code(text: str) -> list[str]:
    """The README's lines, less fenced code (a `# comment` there is no heading)."""
    kept, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced:
            kept.append(line)
    return kept


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to `-`."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def headings(text: str) -> list[str]:
    """The anchors of the `##` and `###` sections, a repeated one suffixed `-1`, `-2`, …"""
    seen: Counter[str] = Counter()
    anchors = []
    for line in lines_outside_code(text):
        match = re.match(r"#{2,3} (.+)", line)
        if match:
            base = anchor(match.group(1).strip())
            anchors.append(f"{base}-{seen[base]}" if seen[base] else base)
            seen[base] += 1
    return anchors


def toc_links(text: str) -> list[str]:
    """The anchors the table of contents links: its list, up to the first line after it."""
    lines = text.splitlines()
    start = lines.index(TOC_START) + 2  # the label, a blank line, then the list
    links = []
    for line in lines[start:]:
        if not line.lstrip().startswith("- ["):
            break
        links += LINK.findall(line)
    return links


def test_the_table_of_contents_links_every_section_in_order_and_nothing_else() -> None:
    text = README.read_text(encoding="utf-8")
    assert toc_links(text) == headings(text)


def test_the_table_of_contents_comes_after_the_first_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    toc = text.index(TOC_START)
    assert text.index("make demo") < text.index("make test") < toc
    assert toc < text.index("\n## ")


def test_every_link_inside_the_readme_points_at_a_section() -> None:
    text = README.read_text(encoding="utf-8")
    assert set(LINK.findall(text)) <= set(headings(text))


def test_the_anchor_rule_is_githubs() -> None:
    assert anchor("The whole stack, locally: `ops/stack`") == "the-whole-stack-locally-opsstack"
    assert anchor("Frames (protocol v1)") == "frames-protocol-v1"
    gateway = "OpenAI-compatible gateway: `genq serve`"
    assert anchor(gateway) == "openai-compatible-gateway-genq-serve"


def test_the_settings_table_is_the_one_generated_from_the_settings_object() -> None:
    text = README.read_text(encoding="utf-8")
    assert readme_settings.readme_table(text) == readme_settings.table(), (
        "README.md's settings table is stale: run `python -m ops.readme_settings --write`"
    )


def test_every_setting_says_which_processes_read_it() -> None:
    assert set(READ_BY) == set(Settings.model_fields)
    for processes in READ_BY.values():
        assert processes and set(processes) <= set(EVERY_PROCESS)
        assert len(set(processes)) == len(processes)


def test_a_settings_row_shows_the_variable_default_unit_bounds_and_readers() -> None:
    rows = readme_settings.table().splitlines()
    (ttl,) = [row for row in rows if row.startswith("| `GENQ_JOB_TTL_S` |")]
    assert ttl.startswith("| `GENQ_JOB_TTL_S` | 86400 | s | ≥ 60, ≤ 7776000 | all | How long")
    (reap,) = [row for row in rows if row.startswith("| `GENQ_REAP_INTERVAL_S` |")]
    assert reap.startswith("| `GENQ_REAP_INTERVAL_S` | 0.5 | s | > 0, ≤ 60 | relay |")
    (cache,) = [row for row in rows if row.startswith("| `GENQ_CACHE_DIR` |")]
    assert "| `~/.cache/genq` |" in cache
    assert len(rows) == 2 + len(Settings.model_fields)
