"""What every format's parser shares: decoding, the normalisation every offset is computed after,
failure messages, and a builder that records sections as offsets into the text it joins."""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from contextlib import contextmanager

from rag.types import LoadError, Section

# (text, title or None, sections): what each format's parser returns.
Parsed = tuple[str, str | None, list[Section]]

# the first bytes of an OLE compound file: Outlook .msg, old .doc/.ppt/.xls, encrypted OOXML
OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
LONE_SURROGATES = re.compile("[\ud800-\udfff]")  # from JSON '\\ud800' or PDF strings: not storable
_BLANK_RUNS = re.compile(r"\n{3,}")
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
_BINARY = "binary content (NUL bytes) under a text file extension"


def normalise(text: str) -> str:
    """Light clean-up that every offset is computed after: newlines, trailing spaces, blank runs.
    NULs (which PDF extraction sometimes emits, and PostgreSQL text refuses) are dropped, and lone
    surrogates (which no database can store as UTF-8) become U+FFFD.

    Trailing space is stripped line by line: the obvious MULTILINE regex for it is quadratic on
    a line with a long run of spaces inside it, and a 40 kB file of that shape took a minute to load."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    text = LONE_SURROGATES.sub("\ufffd", text)
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return _BLANK_RUNS.sub("\n\n", text).strip("\n")


def storable(label: str) -> str:
    """A title or heading as any database can store it: no NULs, no lone surrogates."""
    return LONE_SURROGATES.sub("\ufffd", label.replace("\x00", ""))


def decode(data: bytes) -> str:
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
def malformed(kind: str) -> Iterator[None]:
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


def one_line(text: str) -> str:
    return " ".join(text.split())


class Builder:
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
        block = normalise(block)
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

    def extend(self, text: str, sections: list[Section], label: str | None = None) -> None:
        """Add another parser's normalised text as one block, keeping its sections (shifted to where
        the block lands). With ``label``, every part of it is in a section whose heading starts with
        the label (``label › heading``), so a chunk of an embedded document names the document."""
        self._close()
        if not text or normalise(text) != text:  # not a parser's output: its offsets cannot be trusted
            self.add(text)
            return
        self.add(text)
        offset = self._end - len(text)
        spans = [(s.start, s.end, s.page, s.heading) for s in sections]
        if label is not None:
            spans = _labelled(text, spans, label)
        self._sections.extend(
            Section(start + offset, end + offset, page, heading) for start, end, page, heading in spans
        )

    def _close(self) -> None:
        if self._open is not None and self._start is not None:
            page, heading = self._open
            self._sections.append(Section(self._start, self._end, page=page, heading=heading))
        self._open, self._start = None, None

    def build(self) -> tuple[str, list[Section]]:
        self._close()
        return "".join(self._parts), self._sections


_Span = tuple[int, int, int | None, str | None]


def _labelled(text: str, spans: list[_Span], label: str) -> list[_Span]:
    """``spans`` with ``label`` before each heading, and the text between them in sections of their own
    headed by the label alone (trimmed of surrounding whitespace, as every section is)."""
    out: list[_Span] = []
    position = 0
    for start, end, page, heading in [*spans, (len(text), len(text), None, None)]:
        gap = text[position:start]
        if gap.strip():
            lead = len(gap) - len(gap.lstrip())
            out.append((position + lead, position + len(gap.rstrip()), None, label))
        if end > start:
            out.append((start, end, page, f"{label} › {heading}" if heading else label))
        position = end
    return out
