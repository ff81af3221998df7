"""The Chinese documents stay in step with the English ones: the same sections
(levels and order), the same tables (rows), and the same commands in their
code blocks (comments may be translated)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAIRS = [
    ("README.md", "README.zh-CN.md"),
    ("docs/production.md", "docs/production.zh-CN.md"),
]
CJK = re.compile(r"[\u4e00-\u9fff]")


@dataclass
class Outline:
    headings: list[int] = field(default_factory=list)  # levels, in order
    blocks: list[list[str]] = field(default_factory=list)  # code blocks, comments stripped
    table_rows: list[int] = field(default_factory=list)  # rows per table, in order
    prose: list[str] = field(default_factory=list)


def _strip_comment(line: str) -> str:
    """A shell line without its `# comment` (a # inside quotes is kept)."""
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def outline(text: str) -> Outline:
    out = Outline()
    block: list[str] | None = None
    fence_lang = ""
    rows = 0
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("```"):
            if block is None:
                block, fence_lang = [], line[3:].strip()
            else:
                out.blocks.append([b for b in block if b])
                block = None
            continue
        if block is not None:
            block.append(_strip_comment(line) if fence_lang == "sh" else line.rstrip())
            continue
        if line.startswith("|"):
            rows += 1
            continue
        if rows:
            out.table_rows.append(rows)
            rows = 0
        if m := re.match(r"^(#{1,6}) ", line):
            out.headings.append(len(m.group(1)))
        elif line:
            out.prose.append(line)
    if rows:
        out.table_rows.append(rows)
    return out


@pytest.mark.parametrize(("english", "chinese"), PAIRS)
def test_translation_has_the_same_structure_and_commands(english: str, chinese: str) -> None:
    en = outline((ROOT / english).read_text(encoding="utf-8"))
    zh = outline((ROOT / chinese).read_text(encoding="utf-8"))
    assert zh.headings == en.headings, f"{chinese}: sections differ from {english}"
    assert zh.table_rows == en.table_rows, f"{chinese}: tables differ from {english}"
    assert len(zh.blocks) == len(en.blocks), f"{chinese}: code blocks differ from {english}"
    for i, (a, b) in enumerate(zip(en.blocks, zh.blocks, strict=True)):
        assert b == a, f"{chinese}: code block {i + 1} differs from {english}"
    # It is a translation: its prose is Chinese.
    chinese_lines = sum(bool(CJK.search(p)) for p in zh.prose)
    assert chinese_lines >= 0.8 * len(zh.prose), f"{chinese}: mostly untranslated"


def test_outline_sees_comments_sections_and_tables() -> None:
    text = (
        "# T\n\n## A\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n```sh\nmake up  # go\n"
        '# note\ncurl -d \'{"a": "#1"}\'\n```\n\n### B\ntext\n'
    )
    got = outline(text)
    assert got.headings == [1, 2, 3]
    assert got.table_rows == [3]
    assert got.blocks == [["make up", 'curl -d \'{"a": "#1"}\'']]
    assert got.prose == ["text"]
