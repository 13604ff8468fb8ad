"""The load stage: a file becomes text plus structure (`LoadedDocument`), one small parser per format family
(a module each in this package), chosen by suffix from the table below.

Text is normalised *before* sections are computed, so section offsets (and the chunk citations built
on them) index the returned text exactly. Sections are sorted, never overlap, and need not cover the
whole text: text before a document's first heading belongs to no section. Every failure is a
`LoadError` whose message says why, so ingest can report the file and carry on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from rag.parse.formats.common import Parsed, storable
from rag.parse.formats.data import parse_csv, parse_json, parse_jsonl
from rag.parse.formats.html import parse_html
from rag.parse.formats.markup import parse_markdown, parse_rst
from rag.parse.formats.office import parse_docx, parse_pptx
from rag.parse.formats.pdf import parse_pdf
from rag.parse.formats.plain import parse_txt
from rag.types import LoadedDocument, LoadError

__all__ = ["SUPPORTED_SUFFIXES", "load"]

# a "title" longer than this is prose (documents.title would hold rag.inputs.MAX_TITLE_CHARS)
_MAX_TITLE_CHARS = 200


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
    title = storable(" ".join((title or "").split())[:_MAX_TITLE_CHARS]) or storable(path.stem)
    sections = [replace(s, heading=storable(s.heading)) if s.heading else s for s in sections]
    return LoadedDocument(text=text, title=title, doc_type=fmt.doc_type, mime=fmt.mime, sections=sections)


@dataclass(frozen=True)
class _Format:
    doc_type: str
    mime: str
    parse: Callable[[bytes], Parsed]


_MARKDOWN = _Format("md", "text/markdown", parse_markdown)
_HTML = _Format("html", "text/html", parse_html)
_FORMATS: dict[str, _Format] = {
    ".txt": _Format("txt", "text/plain", parse_txt),
    ".md": _MARKDOWN,
    ".markdown": _MARKDOWN,
    ".mdx": _MARKDOWN,
    ".rst": _Format("rst", "text/x-rst", parse_rst),
    ".html": _HTML,
    ".htm": _HTML,
    ".pdf": _Format("pdf", "application/pdf", parse_pdf),
    ".docx": _Format(
        "docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document", parse_docx
    ),
    ".pptx": _Format(
        "pptx", "application/vnd.openxmlformats-officedocument.presentationml.presentation", parse_pptx
    ),
    ".csv": _Format("csv", "text/csv", parse_csv),
    ".json": _Format("json", "application/json", parse_json),
    ".jsonl": _Format("json", "application/x-ndjson", parse_jsonl),
}

SUPPORTED_SUFFIXES: frozenset[str] = frozenset(_FORMATS)
"""Lower-case suffixes (with the dot) that `load` understands; scan yields only these."""
