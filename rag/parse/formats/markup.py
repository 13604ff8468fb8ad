"""Lightweight markup: Markdown (headings found by markdown-it-py's CommonMark parser),
reStructuredText (titles found by their adornment lines) and Org (headlines found by their stars).
Sections run from a heading to the next."""

from __future__ import annotations

import re
from functools import cache
from itertools import pairwise
from typing import TYPE_CHECKING

from rag.parse.formats.common import Parsed, decode, normalise, one_line
from rag.types import Section

if TYPE_CHECKING:
    from markdown_it import MarkdownIt

_FRONT_MATTER = re.compile(r"\A---\n(.*?)\n(?:---|\.\.\.)(?:\n|\Z)", re.DOTALL)
_FRONT_MATTER_TITLE = re.compile(r"^title:(.*)$", re.MULTILINE)  # stripped after: no backtracking
_RST_ADORNMENT = re.compile(r"^([!-/:-@\[-`{-~])\1+[ \t]*$")
_ORG_HEADLINE = re.compile(r"^\*+[ \t]+(.*)$", re.MULTILINE)
_ORG_TAGS = re.compile(r":[\w@#%:]+:")
_ORG_TITLE = re.compile(r"^#\+title:(.*)$", re.MULTILINE | re.IGNORECASE)


def parse_markdown(data: bytes) -> Parsed:
    """Markdown/MDX: CommonMark ATX and setext headings (not those in code, quotes or lists); YAML front
    matter is dropped, its ``title:`` kept as the title."""
    text = normalise(decode(data))
    title = None
    if front := _FRONT_MATTER.match(text):
        if found := _FRONT_MATTER_TITLE.search(front.group(1)):
            title = found.group(1).strip(" \t").strip("'\"")
        text = text[front.end() :].lstrip("\n")
    heads = _markdown_headings(text)
    return text, title or (heads[0][1] if heads else None), _heading_sections(text, heads)


@cache
def _block_parser() -> MarkdownIt:
    """CommonMark's block rules only: a heading's raw text is all we read, so inline parsing is skipped.
    Imported here: the parsing worker starts once per run and most runs need no Markdown."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark").disable(["inline", "text_join"])


def _markdown_headings(text: str) -> list[tuple[int, str]]:
    """(offset of the heading's first line, its text) for each top-level, non-empty heading."""
    line_starts = [offset for offset, _ in _lines(text)]
    tokens = _block_parser().parse(text)
    heads = []
    for opening, content in pairwise(tokens):
        if opening.type == "heading_open" and opening.level == 0 and opening.map:
            heading = one_line(content.content)
            if heading:
                heads.append((line_starts[opening.map[0]], heading))
    return heads


def parse_rst(data: bytes) -> Parsed:
    """reStructuredText: a title is a line underlined (optionally also overlined) with one repeated
    punctuation character at least as long as the title; indented lines are body, not titles."""
    text = normalise(decode(data))
    lines = _lines(text)
    heads: list[tuple[int, str]] = []
    for i in range(len(lines) - 1):
        pos, line = lines[i]
        under = lines[i + 1][1].rstrip()
        title = line.strip()
        if (
            not title
            or _RST_ADORNMENT.match(line)
            or not _RST_ADORNMENT.match(under)
            or len(under) < len(title)
        ):
            continue
        above = lines[i - 1][1].rstrip() if i else ""
        if above == under:
            heads.append((lines[i - 1][0], title))
        elif not above and not line[0].isspace():
            heads.append((pos, title))
    return text, heads[0][1] if heads else None, _heading_sections(text, heads)


def parse_org(data: bytes) -> Parsed:
    """Org mode: each headline (a line of stars, a space, its text) opens a section headed by its
    text without trailing ``:tags:``; ``#+TITLE:`` is the title. Org has no parser on PyPI that keeps
    offsets, and its headlines are one regular expression."""
    text = normalise(decode(data))
    heads = [
        (found.start(), heading)
        for found in _ORG_HEADLINE.finditer(text)
        if (heading := _org_heading(found.group(1)))
    ]
    title = _ORG_TITLE.search(text)
    return text, title.group(1).strip() if title else None, _heading_sections(text, heads)


def _org_heading(line: str) -> str:
    """The headline's text without its trailing ``:tag1:tag2:`` (split, not a regex over the whole
    line: a line of a million spaces and colons must not backtrack)."""
    words = one_line(line).split(" ")
    if len(words) > 1 and _ORG_TAGS.fullmatch(words[-1]):
        words.pop()
    return " ".join(words)


def _lines(text: str) -> list[tuple[int, str]]:
    """Each line with the offset it starts at."""
    out, pos = [], 0
    for line in text.split("\n"):
        out.append((pos, line))
        pos += len(line) + 1
    return out


def _heading_sections(text: str, heads: list[tuple[int, str]]) -> list[Section]:
    """One section per (offset, heading), running to the next heading, surrounding whitespace excluded
    (a heading line may be indented: CommonMark allows up to three spaces)."""
    sections = []
    for i, (start, heading) in enumerate(heads):
        end = heads[i + 1][0] if i + 1 < len(heads) else len(text)
        span = text[start:end]
        lead = len(span) - len(span.lstrip())
        sections.append(Section(start + lead, start + len(span.rstrip()), heading=heading))
    return sections
