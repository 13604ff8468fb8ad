"""The load stage: a file becomes text plus structure (`LoadedDocument`), one small parser per format,
chosen by suffix.

Text is normalised *before* sections are computed, so section offsets (and the chunk citations built
on them) index the returned text exactly. Sections are sorted, never overlap, and need not cover the
whole text: text before a document's first heading belongs to no section. Every failure is a
`LoadError` whose message says why, so ingest can report the file and carry on.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag.types import LoadedDocument, LoadError, Section

# The parser libraries are imported by the parsers that use them: python-docx alone takes seconds to
# import, and the parsing worker (rag.loadworker) starts once per run, usually for text formats only.
if TYPE_CHECKING:
    from bs4 import Tag
    from docx.table import Table

# (text, title or None, sections): what each format's parser returns.
_Parsed = tuple[str, str | None, list[Section]]

_MAX_TITLE_CHARS = 200  # documents.title is a String(1024); a "title" longer than this is prose
_TXT_TITLE_CHARS = 100  # a .txt file's first line is its title only when it is this short
_LONE_SURROGATES = re.compile("[\ud800-\udfff]")  # from JSON '\\ud800' or PDF strings: not storable
_BLANK_RUNS = re.compile(r"\n{3,}")
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # encrypted OOXML and legacy .doc/.ppt files
_BINARY = "binary content (NUL bytes) under a text file extension"


def load(path: Path) -> LoadedDocument:
    """Read ``path`` and return its text and structure; raise `LoadError` saying why when it can't."""
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise LoadError(f"unsupported file type {path.suffix or '(no extension)'!r}")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise LoadError(f"cannot read file: {e.strerror or e}") from e
    if not data:
        raise LoadError("empty file")
    text, title, sections = fmt.parse(data)
    if not text:
        raise LoadError(f"empty file: no text found in this {fmt.doc_type} file")
    title = _storable(" ".join((title or "").split())[:_MAX_TITLE_CHARS]) or _storable(path.stem)
    sections = [replace(s, heading=_storable(s.heading)) if s.heading else s for s in sections]
    return LoadedDocument(text=text, title=title, doc_type=fmt.doc_type, mime=fmt.mime, sections=sections)


# --- shared helpers ----------------------------------------------------------------------------------


def _normalise(text: str) -> str:
    """Light clean-up that every offset is computed after: newlines, trailing spaces, blank runs.
    NULs (which PDF extraction sometimes emits, and PostgreSQL text refuses) are dropped, and lone
    surrogates (which no database can store as UTF-8) become U+FFFD.

    Trailing space is stripped line by line: the obvious MULTILINE regex for it is quadratic on
    a line with a long run of spaces inside it, and a 40 kB file of that shape took a minute to load."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    text = _LONE_SURROGATES.sub("\ufffd", text)
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return _BLANK_RUNS.sub("\n\n", text).strip("\n")


def _storable(label: str) -> str:
    """A title or heading as any database can store it: no NULs, no lone surrogates."""
    return _LONE_SURROGATES.sub("\ufffd", label.replace("\x00", ""))


def _decode(data: bytes) -> str:
    """UTF-8 (with or without BOM) or UTF-16 with a BOM. Anything else is refused, not guessed: a wrong
    guess would index mojibake that no question will ever match."""
    encoding = "utf-16" if data.startswith(_UTF16_BOMS) else "utf-8-sig"
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as e:
        if encoding != "utf-16" and b"\x00" in data:  # UTF-16 text is full of NULs: not a sign
            raise LoadError(_BINARY) from e
        raise LoadError(
            f"not valid {'UTF-16' if encoding == 'utf-16' else 'UTF-8'} text (undecodable byte "
            f"0x{data[e.start]:02x} at offset {e.start}); save the file as UTF-8"
        ) from e
    if "\x00" in text:
        raise LoadError(_BINARY)
    return text


@contextmanager
def _malformed(kind: str) -> Iterator[None]:
    """Parsers of binary formats raise almost anything on bad input (KeyError, struct.error, ...): turn
    it into a LoadError that names the format, keeping our own LoadErrors as they are."""
    try:
        yield
    except LoadError:
        raise
    except Exception as e:
        detail = str(e) or type(e).__name__
        if isinstance(e, MemoryError) or "allocat" in detail.lower():  # zlib and libxml2 say it so
            raise LoadError(
                f"{kind} file too big to parse within the parser's memory limit ({detail}); "
                "it may be a compression bomb"
            ) from e
        raise LoadError(f"damaged or truncated {kind} file ({detail})") from e


def _one_line(text: str) -> str:
    return " ".join(text.split())


class _Builder:
    """Joins normalised blocks with one blank line and records sections as offsets into the result."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._length = 0
        self._sections: list[Section] = []
        self._open: tuple[int | None, str | None] | None = None  # (page, heading) being filled
        self._start: int | None = None
        self._end = 0

    def section(self, *, page: int | None = None, heading: str | None = None) -> None:
        """Start a section; it spans the blocks added until the next call (none added: no section)."""
        self._close()
        self._open = (page, heading)

    def add(self, block: str) -> None:
        block = _normalise(block)
        if not block:
            return
        if self._parts:
            self._parts.append("\n\n")
            self._length += 2
        if self._open is not None and self._start is None:
            self._start = self._length
        self._parts.append(block)
        self._length += len(block)
        self._end = self._length

    def _close(self) -> None:
        if self._open is not None and self._start is not None:
            page, heading = self._open
            self._sections.append(Section(self._start, self._end, page=page, heading=heading))
        self._open, self._start = None, None

    def build(self) -> tuple[str, list[Section]]:
        self._close()
        return "".join(self._parts), self._sections


def _lines(text: str) -> list[tuple[int, str]]:
    """Each line with the offset it starts at."""
    out, pos = [], 0
    for line in text.split("\n"):
        out.append((pos, line))
        pos += len(line) + 1
    return out


def _heading_sections(text: str, heads: list[tuple[int, str]]) -> list[Section]:
    """One section per (offset, heading), running to the next heading, trailing blank lines excluded."""
    sections = []
    for i, (start, heading) in enumerate(heads):
        end = heads[i + 1][0] if i + 1 < len(heads) else len(text)
        sections.append(Section(start, start + len(text[start:end].rstrip()), heading=heading))
    return sections


# --- plain text and lightweight markup --------------------------------------------------------------


def _txt(data: bytes) -> _Parsed:
    text = _normalise(_decode(data))
    first_line = text.split("\n", 1)[0].strip()
    return text, first_line if len(first_line) <= _TXT_TITLE_CHARS else None, []


_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_ATX_OPEN = re.compile(r" {0,3}#{1,6}(?=[ \t]|$)")
_SETEXT_UNDERLINE = re.compile(r"^ {0,3}(?:=+|-+)[ \t]*$")
_NOT_SETEXT_TEXT = re.compile(r"^\s*(?:[-*+]\s|>|\||\d+[.)]\s)|^ {4}")  # list, quote, table, code lines
_FRONT_MATTER = re.compile(r"\A---\n(.*?)\n(?:---|\.\.\.)(?:\n|\Z)", re.DOTALL)
_FRONT_MATTER_TITLE = re.compile(r"^title:(.*)$", re.MULTILINE)  # stripped after: no backtracking


def _markdown(data: bytes) -> _Parsed:
    """Markdown/MDX: ATX and setext headings outside code fences; YAML front matter is dropped, its
    ``title:`` kept as the title."""
    text = _normalise(_decode(data))
    title = None
    if front := _FRONT_MATTER.match(text):
        if found := _FRONT_MATTER_TITLE.search(front.group(1)):
            title = found.group(1).strip(" \t").strip("'\"")
        text = text[front.end() :].lstrip("\n")
    heads = _markdown_headings(text)
    return text, title or (heads[0][1] if heads else None), _heading_sections(text, heads)


def _atx_heading(line: str) -> str | None:
    """The text of an ATX heading line ('' for an empty one), None when the line is not one.
    Written out rather than as one regex: a lazy group before optional closing #s backtracks
    quadratically on a heading line with a long run of spaces."""
    opened = _ATX_OPEN.match(line)
    if opened is None:
        return None
    content = line[opened.end() :].rstrip(" \t")
    closing = content.rstrip("#")
    if closing != content and (not closing or closing[-1] in " \t"):
        content = closing  # a closing sequence of #s counts only after a space (CommonMark)
    return content.strip()


def _markdown_headings(text: str) -> list[tuple[int, str]]:
    heads: list[tuple[int, str]] = []
    lines = _lines(text)
    fence = ""
    for i, (pos, line) in enumerate(lines):
        if found := _FENCE.match(line):
            mark = found.group(1)
            if not fence:
                fence = mark
            elif mark[0] == fence[0] and len(mark) >= len(fence) and not line[found.end() :].strip():
                fence = ""
            continue
        if fence:
            continue
        if (atx := _atx_heading(line)) is not None:
            if atx:
                heads.append((pos, atx))
        elif (
            line.strip()
            and i + 1 < len(lines)
            and _SETEXT_UNDERLINE.match(lines[i + 1][1])
            and (i == 0 or not lines[i - 1][1].strip())
            and not _NOT_SETEXT_TEXT.match(line)
        ):
            heads.append((pos, line.strip()))
    return heads


_RST_ADORNMENT = re.compile(r"^([!-/:-@\[-`{-~])\1+[ \t]*$")


def _rst(data: bytes) -> _Parsed:
    """reStructuredText: a title is a line underlined (optionally also overlined) with one repeated
    punctuation character at least as long as the title; indented lines are body, not titles."""
    text = _normalise(_decode(data))
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


# --- HTML ---------------------------------------------------------------------------------------------

_HTML_DROP = ["script", "style", "nav", "header", "footer", "aside", "noscript", "template"]
_HTML_DROP += ["head", "svg", "iframe"]  # <title> is read before <head> goes
_HTML_SECTION_HEADINGS = frozenset({"h1", "h2", "h3"})
_HTML_BLOCKS = frozenset(
    {"address", "article", "blockquote", "body", "caption", "dd", "details", "div", "dl", "dt"}
    | {"fieldset", "figcaption", "figure", "form", "h4", "h5", "h6", "hr", "html", "li", "main"}
    | {"ol", "p", "section", "summary", "table", "tbody", "tfoot", "thead", "ul"}
)
_WHITESPACE = re.compile(r"\s+")
_END_OF_BLOCK = object()  # marker on the HTML walk's stack: the block element's text ends here


def _html(data: bytes) -> _Parsed:
    """Visible prose only. Page furniture is dropped, except a <header>/<footer> inside <article> or
    <main>, which belongs to the content (it often holds the article's <h1>)."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(_decode(data), "lxml")
    title_tag, first_h1 = soup.title, soup.find("h1")
    title = _one_line(title_tag.get_text()) if title_tag else ""
    if not title and first_h1:
        title = _one_line(first_h1.get_text(" "))
    for tag in soup.find_all(_HTML_DROP):
        if tag.decomposed or (tag.name in ("header", "footer") and tag.find_parent(("article", "main"))):
            continue
        tag.decompose()
    extractor = _HtmlText()
    extractor.walk(soup)
    text, sections = extractor.finish()
    return text, title or None, sections


class _HtmlText:
    """Walks the tree: inline text gathers into a paragraph, block elements end it, h1–h3 open sections,
    <br> and table rows break lines, <pre> keeps its layout."""

    def __init__(self) -> None:
        self._builder = _Builder()
        self._inline: list[str] = []

    def walk(self, root: Tag) -> None:
        """Depth-first with an explicit stack: a page nested thousands of tags deep (generated or
        hostile) would exhaust Python's recursion limit."""
        from bs4 import NavigableString, Tag
        from bs4.element import PreformattedString

        stack: list[Any] = list(reversed(root.contents))
        while stack:
            node = stack.pop()
            if node is _END_OF_BLOCK:
                self._flush()
            elif isinstance(node, Tag):
                self._element(node, stack)
            elif isinstance(node, NavigableString) and not isinstance(node, PreformattedString):
                self._inline.append(_WHITESPACE.sub(" ", node))  # comments/doctype are Preformatted

    def _element(self, tag: Tag, stack: list[Any]) -> None:
        """Handle ``tag``; the children still to walk are pushed on ``stack`` (last pushed, first)."""
        name = tag.name
        if name == "br":
            self._inline.append("\n")
        elif name == "tr":
            cells = (_one_line(cell.get_text(" ")) for cell in tag.find_all(("td", "th"), recursive=False))
            self._inline.append("\n" + " | ".join(c for c in cells if c) + "\n")
        elif name == "pre":
            self._flush()
            self._builder.add(tag.get_text())
        elif name in _HTML_SECTION_HEADINGS:
            self._flush()
            heading = _one_line(tag.get_text(" "))
            if heading:
                self._builder.section(heading=heading)
                self._builder.add(heading)
        elif name in _HTML_BLOCKS:
            self._flush()
            stack.append(_END_OF_BLOCK)
            stack.extend(reversed(tag.contents))
        else:
            stack.extend(reversed(tag.contents))

    def _flush(self) -> None:
        lines = (_one_line(line) for line in "".join(self._inline).split("\n"))
        self._builder.add("\n".join(line for line in lines if line))
        self._inline.clear()

    def finish(self) -> tuple[str, list[Section]]:
        self._flush()
        return self._builder.build()


# --- PDF and Office -----------------------------------------------------------------------------------


def _pdf(data: bytes) -> _Parsed:
    """A section per page (page = 1-based number); pages with no text get no section."""
    from pypdf import PasswordType, PdfReader
    from pypdf.errors import DependencyError

    builder = _Builder()
    with _malformed("PDF"):
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            try:
                opened = reader.decrypt("")
            except DependencyError as e:
                raise LoadError(f"encrypted PDF that this installation cannot decrypt: {e}") from e
            if opened == PasswordType.NOT_DECRYPTED:
                raise LoadError("encrypted PDF: it needs a password to open")
        for number, page in enumerate(reader.pages, start=1):
            builder.section(page=number)
            builder.add(page.extract_text())
        title = reader.metadata.title if reader.metadata else None
    text, sections = builder.build()
    if not text:
        raise LoadError("no extractable text in this PDF: it may be scanned images (OCR is not supported)")
    return text, title, sections


def _refuse_ole(data: bytes, kind: str) -> None:
    """Word/PowerPoint save password-protected files as an OLE container, not a zip; say so."""
    if data.startswith(_OLE_MAGIC):
        raise LoadError(
            f"not a {kind} package: password-protected Office files and old binary .doc/.ppt "
            "files are not supported"
        )


def _docx(data: bytes) -> _Parsed:
    """Body paragraphs and tables in order; 'Title' and 'Heading N' paragraphs open sections."""
    _refuse_ole(data, "DOCX")
    builder = _Builder()
    first_heading = None
    with _malformed("DOCX"):
        import docx
        from docx.table import Table

        document = docx.Document(io.BytesIO(data))
        for item in document.iter_inner_content():
            if isinstance(item, Table):
                builder.add(_docx_table(item))
                continue
            style = item.style.name if item.style is not None else ""
            heading = _one_line(item.text)
            if heading and (style == "Title" or style.startswith("Heading")):
                builder.section(heading=heading)
                first_heading = first_heading or heading
            builder.add(item.text)
        title = document.core_properties.title or first_heading
    text, sections = builder.build()
    return text, title, sections


def _docx_table(table: Table) -> str:
    """One line per row, cells joined by ' | '; a merged cell repeats in python-docx, so once only."""
    rows = []
    for row in table.rows:
        seen: set[int] = set()
        cells = []
        for cell in row.cells:
            if id(cell._tc) not in seen:
                seen.add(id(cell._tc))
                cells.append(_one_line(cell.text))
        rows.append(" | ".join(c for c in cells if c))
    return "\n".join(rows)


def _pptx(data: bytes) -> _Parsed:
    """A section per slide (page = slide number, heading = slide title): title, other shapes' text
    (groups and tables included), then the speaker notes."""
    _refuse_ole(data, "PPTX")
    builder = _Builder()
    first_title = None
    with _malformed("PPTX"):
        import pptx

        presentation = pptx.Presentation(io.BytesIO(data))
        for number, slide in enumerate(presentation.slides, start=1):
            title_shape = slide.shapes.title
            title = _one_line(title_shape.text_frame.text) if title_shape is not None else ""
            first_title = first_title or title
            builder.section(page=number, heading=title or None)
            builder.add(title)
            for text in _shape_texts(s for s in slide.shapes if s != title_shape):
                builder.add(text)
            if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
                builder.add(slide.notes_slide.notes_text_frame.text)
        doc_title = presentation.core_properties.title or first_title
    text, sections = builder.build()
    return text, doc_title, sections


def _shape_texts(shapes: Iterable[Any]) -> Iterator[str]:
    from pptx.enum.shapes import MSO_SHAPE_TYPE

    for shape in shapes:
        if shape.shape_type == MSO_SHAPE_TYPE.GROUP:
            yield from _shape_texts(shape.shapes)
        elif shape.has_text_frame:
            yield shape.text_frame.text.replace("\v", "\n")  # python-pptx renders <a:br/> as \v
        elif shape.has_table:
            yield "\n".join(" | ".join(_one_line(c.text) for c in row.cells) for row in shape.table.rows)


# --- data formats -------------------------------------------------------------------------------------

_CSV_DELIMITERS = (",", ";", "\t", "|")


def _csv(data: bytes) -> _Parsed:
    """Each row as 'header: value; header: value' (empty cells left out). The first row is the header,
    and the delimiter is whichever of , ; tab | it uses most (csv.Sniffer guesses wrong on ragged rows)."""
    text = _decode(data)
    first_line = next((line for line in text.splitlines() if line.strip()), "")
    delimiter = max(_CSV_DELIMITERS, key=first_line.count)  # ties go to the first: ','
    with _malformed("CSV"):
        rows = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
        header = [_one_line(h) for h in next(rows, [])]
        lines = []
        for row in rows:
            pairs = [
                f"{header[i] if i < len(header) and header[i] else f'column {i + 1}'}: {_one_line(value)}"
                for i, value in enumerate(row)
                if value.strip()
            ]
            if pairs:
                lines.append("; ".join(pairs))
    return _normalise("\n".join(lines)), None, []


def _json(data: bytes) -> _Parsed:
    """Flattened to 'a.b[0].c: value' lines, so keys are searchable next to their values; a top-level
    string "title" is the title."""
    with _malformed("JSON"):  # RecursionError on absurd nesting
        value = _parse_json(_decode(data))
        text = _json_text([value])
    title = value.get("title") if isinstance(value, dict) else None
    return text, title if isinstance(title, str) else None, []


def _jsonl(data: bytes) -> _Parsed:
    """One JSON value per line, each flattened like a .json file; records separated by a blank line."""
    with _malformed("JSON Lines"):
        lines = enumerate(_decode(data).splitlines(), start=1)
        return _json_text([_parse_json(line, number) for number, line in lines if line.strip()]), None, []


def _parse_json(text: str, line: int | None = None) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise LoadError(f"invalid JSON at line {line or e.lineno}, column {e.colno}: {e.msg}") from e


def _json_text(values: list[Any]) -> str:
    blocks = []
    for value in values:
        lines: list[str] = []
        _flatten(value, "", lines)
        blocks.append("\n".join(lines))
    return _normalise("\n\n".join(blocks))


def _flatten(value: Any, path: str, out: list[str]) -> None:
    if isinstance(value, dict):
        for key, child in value.items():
            _flatten(child, f"{path}.{key}" if path else str(key), out)
    elif isinstance(value, list):
        for i, child in enumerate(value):
            _flatten(child, f"{path}[{i}]", out)
    else:
        shown = value if isinstance(value, str) else json.dumps(value)
        out.append(f"{path}: {shown}" if path else shown)


# --- dispatch -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Format:
    doc_type: str
    mime: str
    parse: Callable[[bytes], _Parsed]


_MARKDOWN = _Format("md", "text/markdown", _markdown)
_HTML = _Format("html", "text/html", _html)
_FORMATS: dict[str, _Format] = {
    ".txt": _Format("txt", "text/plain", _txt),
    ".md": _MARKDOWN,
    ".markdown": _MARKDOWN,
    ".mdx": _MARKDOWN,
    ".rst": _Format("rst", "text/x-rst", _rst),
    ".html": _HTML,
    ".htm": _HTML,
    ".pdf": _Format("pdf", "application/pdf", _pdf),
    ".docx": _Format(
        "docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document", _docx
    ),
    ".pptx": _Format(
        "pptx", "application/vnd.openxmlformats-officedocument.presentationml.presentation", _pptx
    ),
    ".csv": _Format("csv", "text/csv", _csv),
    ".json": _Format("json", "application/json", _json),
    ".jsonl": _Format("json", "application/x-ndjson", _jsonl),
}

SUPPORTED_SUFFIXES: frozenset[str] = frozenset(_FORMATS)
"""Lower-case suffixes (with the dot) that `load` understands; scan yields only these."""
