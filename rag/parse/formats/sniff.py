"""What a file without an extension is, from its first bytes: the suffix whose parser reads it, or None.
Magic numbers for binary formats, the stored ``mimetype`` of ODF and EPUB zips, part names for Office
zips and stream names for OLE files (Outlook .msg, old Word/Excel/PowerPoint), header lines for mail,
and valid UTF-8 without NULs for text (a ``#!`` line names its language)."""

from __future__ import annotations

import codecs
import re

from rag.parse.formats.common import OLE_MAGIC

HEAD_BYTES = 8192  # what scan reads of a file without an extension to decide

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-", ".pdf"),
    (b"{\\rtf", ".rtf"),
    (b"\x89PNG\r\n\x1a\n", ".png"),
    (b"\xff\xd8\xff", ".jpg"),
    (b"GIF87a", ".gif"),
    (b"GIF89a", ".gif"),
    (b"II*\x00", ".tiff"),
    (b"MM\x00*", ".tiff"),
    (b"BM", ".bmp"),
)
_ZIP_MIMETYPES = {
    b"application/epub+zip": ".epub",
    b"application/vnd.oasis.opendocument.text": ".odt",
    b"application/vnd.oasis.opendocument.spreadsheet": ".ods",
    b"application/vnd.oasis.opendocument.presentation": ".odp",
}
_OOXML_PARTS = ((b"word/", ".docx"), (b"xl/", ".xlsx"), (b"ppt/", ".pptx"))
_MAIL_HEADER = re.compile(
    rb"(?:Return-Path|Received|From|To|Subject|Date|Message-ID|MIME-Version|Delivered-To|X-[\w-]+):[ \t]",
    re.IGNORECASE,
)
OLE_BYTES = 4 << 20  # an OLE file's directory can be anywhere: scan reads this much of one to find it
_OLE_STREAMS = (  # stream names, as UTF-16 in the directory, that say what an OLE file holds
    ("__substg1.0_".encode("utf-16-le"), ".msg"),
    ("WordDocument".encode("utf-16-le"), ".doc"),
    ("PowerPoint Document".encode("utf-16-le"), ".ppt"),
    ("Workbook".encode("utf-16-le"), ".xls"),
)
_SHEBANGS = (("python", ".py"), ("node", ".js"), ("bash", ".sh"), ("/sh", ".sh"), ("zsh", ".sh"))


def sniff(head: bytes) -> str | None:
    """The suffix for a file that starts with ``head`` (its first `HEAD_BYTES`, or `OLE_BYTES` of an OLE
    file), or None."""
    for magic, suffix in _MAGIC:
        if head.startswith(magic):
            return suffix if suffix != ".bmp" or len(head) > 26 else None
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return ".webp"
    if head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"mif1", b"msf1"):
        return ".heic"
    if head.startswith(b"PK\x03\x04"):
        return _zip_suffix(head)
    if head.startswith(OLE_MAGIC):
        return next((suffix for name, suffix in _OLE_STREAMS if name in head), None)
    return _text_suffix(head)


def _zip_suffix(head: bytes) -> str | None:
    if head[30:38] == b"mimetype":  # ODF and EPUB store it first, uncompressed
        for mimetype, suffix in _ZIP_MIMETYPES.items():
            if head[38:].startswith(mimetype):
                return suffix
    return next((suffix for part, suffix in _OOXML_PARTS if part in head), None)


def _text_suffix(head: bytes) -> str | None:
    try:
        text = codecs.getincrementaldecoder("utf-8-sig")().decode(head, final=False)
    except UnicodeDecodeError:
        return None
    if not text.strip() or "\x00" in text:
        return None
    first = text.lstrip()[:200].lower()
    if first.startswith("#!"):
        line = first.split("\n", 1)[0]
        return next((suffix for name, suffix in _SHEBANGS if name in line), ".txt")
    if first.startswith(("<!doctype html", "<html")):
        return ".html"
    lines = text.split("\n", 8)[:8]
    if sum(bool(_MAIL_HEADER.match(line.encode())) for line in lines) >= 2:
        return ".eml"
    return ".txt"
