"""The load stage: a file becomes text plus structure (`LoadedDocument`), one small parser per format family
(a module each in this package), chosen by suffix from the table below, or by content (rag.parse.formats
.sniff) for a file without one.

Text is normalised *before* sections are computed, so section offsets (and the chunk citations built
on them) index the returned text exactly. Sections are sorted, never overlap, and need not cover the
whole text: text before a document's first heading belongs to no section. Every failure is a
`LoadError` whose message says why, so ingest can report the file and carry on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path, PurePosixPath

from rag.parse.formats.code import LANGUAGES, parse_code
from rag.parse.formats.common import OLE_MAGIC, Parsed, storable
from rag.parse.formats.data import parse_csv, parse_json, parse_jsonl, parse_tsv
from rag.parse.formats.ebook import parse_epub
from rag.parse.formats.html import parse_html
from rag.parse.formats.images import parse_image
from rag.parse.formats.legacy import legacy_parser
from rag.parse.formats.mail import parse_eml
from rag.parse.formats.markup import parse_markdown, parse_org, parse_rst
from rag.parse.formats.odf import parse_odp, parse_odt
from rag.parse.formats.office import parse_docx, parse_pptx
from rag.parse.formats.outlook import parse_msg
from rag.parse.formats.pdf import parse_pdf
from rag.parse.formats.plain import parse_txt
from rag.parse.formats.rtf import parse_rtf
from rag.parse.formats.sheets import parse_sheets
from rag.parse.formats.sniff import HEAD_BYTES, OLE_BYTES, sniff
from rag.types import LoadedDocument, LoadError

__all__ = ["SUPPORTED_SUFFIXES", "load", "sniff_file"]

# a "title" longer than this is prose (documents.title would hold rag.inputs.MAX_TITLE_CHARS)
_MAX_TITLE_CHARS = 200


def load(path: Path) -> LoadedDocument:
    """Read ``path`` and return its text and structure; raise `LoadError` saying why when it can't."""
    suffix = path.suffix.lower()
    if suffix and suffix not in _FORMATS:
        raise LoadError(f"unsupported file type {suffix!r}")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise LoadError(f"cannot read file: {e.strerror or e}") from e
    if not data:
        raise LoadError("empty file")
    fmt = _FORMATS.get(suffix or _sniff(data) or "")
    if fmt is None:
        raise LoadError("unsupported file type '(no extension)': its content is not a type sightline reads")
    text, title, sections = fmt.parse(data)
    if not text:
        raise LoadError(f"empty file: no text found in this {fmt.doc_type} file")
    title = storable(" ".join((title or "").split())[:_MAX_TITLE_CHARS]) or storable(path.stem)
    sections = [replace(s, heading=storable(s.heading)) if s.heading else s for s in sections]
    return LoadedDocument(text=text, title=title, doc_type=fmt.doc_type, mime=fmt.mime, sections=sections)


def sniff_file(path: Path) -> str | None:
    """The suffix whose parser reads the file at ``path`` (which has none), from its first bytes."""
    with path.open("rb") as f:
        head = f.read(HEAD_BYTES)
        if head.startswith(OLE_MAGIC):  # its directory, which names its streams, may lie further in
            head += f.read(OLE_BYTES - HEAD_BYTES)
    found = sniff(head)
    return found if found in _FORMATS else None


def _sniff(data: bytes) -> str | None:
    return sniff(data[:HEAD_BYTES]) or sniff(data[:OLE_BYTES])


def _read_attachment(name: str, data: bytes) -> Parsed:
    """A mail's attachment, by the suffix of its name or else by its content."""
    suffix = PurePosixPath(name).suffix.lower()
    fmt = _FORMATS.get(suffix) if suffix in _FORMATS else _FORMATS.get(_sniff(data) or "")
    if fmt is None or not data:
        raise LoadError(f"unsupported attachment type {suffix or '(no extension)'!r}")
    return fmt.parse(data)


def _reread(data: bytes) -> Parsed | None:
    """A '.doc' that is really RTF, HTML or DOCX (as Word saves on request), read as what it is."""
    found = _sniff(data)
    return _FORMATS[found].parse(data) if found in (".rtf", ".html", ".docx", ".pptx") else None


@dataclass(frozen=True)
class _Format:
    doc_type: str
    mime: str
    parse: Callable[[bytes], Parsed]


_OOXML = "application/vnd.openxmlformats-officedocument."
_ODF = "application/vnd.oasis.opendocument."
_MARKDOWN = _Format("md", "text/markdown", parse_markdown)
_HTML = _Format("html", "text/html", parse_html)
_XLSX = _Format("xlsx", f"{_OOXML}spreadsheetml.sheet", partial(parse_sheets, kind="XLSX"))
_JPEG = _Format("jpeg", "image/jpeg", parse_image)
_TIFF = _Format("tiff", "image/tiff", parse_image)
_FORMATS: dict[str, _Format] = {
    ".txt": _Format("txt", "text/plain", parse_txt),
    ".md": _MARKDOWN,
    ".markdown": _MARKDOWN,
    ".mdx": _MARKDOWN,
    ".rst": _Format("rst", "text/x-rst", parse_rst),
    ".org": _Format("org", "text/org", parse_org),
    ".html": _HTML,
    ".htm": _HTML,
    ".xhtml": _HTML,
    ".pdf": _Format("pdf", "application/pdf", parse_pdf),
    ".docx": _Format("docx", f"{_OOXML}wordprocessingml.document", parse_docx),
    ".pptx": _Format("pptx", f"{_OOXML}presentationml.presentation", parse_pptx),
    ".xlsx": _XLSX,
    ".xlsm": _XLSX,
    ".xls": _Format("xls", "application/vnd.ms-excel", partial(parse_sheets, kind="XLS")),
    ".doc": _Format("doc", "application/msword", legacy_parser(".doc", ".docx", _reread)),
    ".ppt": _Format("ppt", "application/vnd.ms-powerpoint", legacy_parser(".ppt", ".pptx", _reread)),
    ".odt": _Format("odt", f"{_ODF}text", parse_odt),
    ".ods": _Format("ods", f"{_ODF}spreadsheet", partial(parse_sheets, kind="ODS")),
    ".odp": _Format("odp", f"{_ODF}presentation", parse_odp),
    ".rtf": _Format("rtf", "application/rtf", parse_rtf),
    ".epub": _Format("epub", "application/epub+zip", parse_epub),
    ".eml": _Format("eml", "message/rfc822", partial(parse_eml, read_attachment=_read_attachment)),
    ".msg": _Format(
        "msg", "application/vnd.ms-outlook", partial(parse_msg, read_attachment=_read_attachment)
    ),
    ".csv": _Format("csv", "text/csv", parse_csv),
    ".tsv": _Format("tsv", "text/tab-separated-values", parse_tsv),
    ".json": _Format("json", "application/json", parse_json),
    ".jsonl": _Format("json", "application/x-ndjson", parse_jsonl),
    ".png": _Format("png", "image/png", parse_image),
    ".jpg": _JPEG,
    ".jpeg": _JPEG,
    ".tif": _TIFF,
    ".tiff": _TIFF,
    ".bmp": _Format("bmp", "image/bmp", parse_image),
    ".gif": _Format("gif", "image/gif", parse_image),
    ".webp": _Format("webp", "image/webp", parse_image),
    ".heic": _Format("heic", "image/heic", parse_image),
    ".heif": _Format("heic", "image/heif", parse_image),
    **{suffix: _Format(language, mime, parse_code) for suffix, (language, mime) in LANGUAGES.items()},
}

SUPPORTED_SUFFIXES: frozenset[str] = frozenset(_FORMATS)
"""Lower-case suffixes (with the dot) that `load` understands; scan yields only these (and files without
a suffix whose content `sniff_file` recognises)."""
