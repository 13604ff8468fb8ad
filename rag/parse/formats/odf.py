"""OpenDocument text (.odt) and presentations (.odp); spreadsheets (.ods) go to rag.parse.formats.sheets.

Written on lxml rather than odfpy: odfpy (last released 2020) builds its own DOM of the whole file and
has no reader that keeps headings apart from paragraphs, while content.xml's few elements that carry
text (paragraphs, headings, lists, tables, frames) are read here in one walk with an explicit stack,
which a hostile file nested thousands deep cannot exhaust."""

from __future__ import annotations

from typing import Any

from rag.parse.formats.common import Builder, Parsed, malformed, one_line
from rag.parse.formats.containers import open_zip, read_member

_TEXT = "{urn:oasis:names:tc:opendocument:xmlns:text:1.0}"
_TABLE = "{urn:oasis:names:tc:opendocument:xmlns:table:1.0}"
_DRAW = "{urn:oasis:names:tc:opendocument:xmlns:drawing:1.0}"
_OFFICE = "{urn:oasis:names:tc:opendocument:xmlns:office:1.0}"
_PRESENTATION = "{urn:oasis:names:tc:opendocument:xmlns:presentation:1.0}"
_DC_TITLE = "{http://purl.org/dc/elements/1.1/}title"
_SKIPPED = frozenset(
    {f"{_OFFICE}annotation", f"{_TEXT}tracked-changes", f"{_TEXT}note-citation", f"{_PRESENTATION}notes"}
)
_MAX_SPACES = 64  # <text:s text:c="1000000000"/> is a billion spaces: a bomb, not layout


def parse_odt(data: bytes) -> Parsed:
    """Paragraphs, lists and tables in order (tables as 'cell | cell' lines); headings open sections."""
    root, title = _open(data, "ODT")
    builder = Builder()
    first_heading = None
    with malformed("ODT"):
        for body in root.iter(f"{_OFFICE}text"):
            for block in _blocks(body):
                if block.tag == f"{_TEXT}h" and (heading := one_line(_inline(block))):
                    builder.section(heading=heading)
                    first_heading = first_heading or heading
                builder.add(_block_text(block))
    text, sections = builder.build()
    return text, title or first_heading, sections


def parse_odp(data: bytes) -> Parsed:
    """A section per slide (page = slide number, heading = its title), then the speaker notes."""
    root, title = _open(data, "ODP")
    builder = Builder()
    with malformed("ODP"):
        for number, slide in enumerate(root.iter(f"{_DRAW}page"), start=1):
            frames = [f for f in slide.iter(f"{_DRAW}frame") if f.getparent().tag != f"{_PRESENTATION}notes"]
            titles = [f for f in frames if f.get(f"{_PRESENTATION}class") == "title"]
            heading = one_line(" ".join(_inline(b) for f in titles[:1] for b in _blocks(f)))
            builder.section(page=number, heading=heading or None)
            for frame in titles[:1] + [f for f in frames if f not in titles[:1]]:
                for block in _blocks(frame):
                    builder.add(_block_text(block))
            for notes in slide.iter(f"{_PRESENTATION}notes"):
                for block in _blocks(notes, skip=frozenset()):
                    builder.add(_block_text(block))
    text, sections = builder.build()
    return text, title or next((s.heading for s in sections if s.heading), None), sections


def _open(data: bytes, kind: str) -> tuple[Any, str | None]:
    """content.xml's root, and the title from meta.xml when there is one."""
    from lxml import etree

    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)
    with open_zip(data, kind) as archive:
        content = read_member(archive, "content.xml", kind)
        meta = read_member(archive, "meta.xml", kind) if "meta.xml" in archive.namelist() else None
    with malformed(kind):
        root = etree.fromstring(content, parser)
        title_element = etree.fromstring(meta, parser).find(f".//{_DC_TITLE}") if meta else None
    title = one_line(title_element.text or "") if title_element is not None else ""
    return root, title or None


def _blocks(root: Any, skip: frozenset[str] = _SKIPPED) -> list[Any]:
    """Paragraphs, headings and tables under ``root`` in document order (lists and sections opened),
    without walking into what they contain."""
    found, stack = [], list(reversed(root))
    while stack:
        element = stack.pop()
        if not isinstance(element.tag, str) or element.tag in skip:
            continue
        if element.tag in (f"{_TEXT}p", f"{_TEXT}h", f"{_TABLE}table"):
            found.append(element)
        else:
            stack.extend(reversed(element))
    return found


def _block_text(block: Any) -> str:
    if block.tag != f"{_TABLE}table":
        return _inline(block)
    rows = []
    for row in block.iter(f"{_TABLE}table-row"):
        cells = (one_line(" ".join(_inline(p) for p in _blocks(cell))) for cell in row)
        rows.append(" | ".join(c for c in cells if c))
    return "\n".join(r for r in rows if r)


def _inline(paragraph: Any) -> str:
    """A paragraph's text: spans and links opened, <text:s>/<text:tab>/<text:line-break> as the space,
    tab or newline they stand for, annotations and tracked deletions left out."""
    parts: list[str] = [paragraph.text or ""]
    stack: list[Any] = [(child, True) for child in reversed(paragraph)]
    while stack:
        element, opening = stack.pop()
        if not opening:  # after an element's children: the text that follows it in its parent
            parts.append(element.tail or "")
            continue
        stack.append((element, False))
        tag = element.tag
        if not isinstance(tag, str) or tag in _SKIPPED:
            continue
        if tag == f"{_TEXT}s":
            count = element.get(f"{_TEXT}c", "1")
            parts.append(" " * min(int(count) if count.isdigit() else 1, _MAX_SPACES))
        elif tag == f"{_TEXT}tab":
            parts.append("\t")
        elif tag == f"{_TEXT}line-break":
            parts.append("\n")
        else:
            parts.append(element.text or "")
            stack.extend((child, True) for child in reversed(element))
    return "".join(parts)
