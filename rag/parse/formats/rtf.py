"""Rich Text Format, read by striprtf (control words dropped, \\'hh and \\uN escapes decoded in the
document's own code page)."""

from __future__ import annotations

import re

from rag.parse.formats.common import Parsed, malformed, normalise
from rag.types import LoadError

_CODE_PAGE = re.compile(rb"\\ansicpg(\d{3,5})")
_TITLE = re.compile(r"\{\\info[^{}]*\{\\title ([^{}\\]*)\}")
_BINARY = re.compile(rb"\\bin(\d+)")


def parse_rtf(data: bytes) -> Parsed:
    if not data.lstrip().startswith(b"{\\rtf"):
        raise LoadError("not an RTF file: it does not start with {\\rtf")
    if _BINARY.search(data):  # \binN is followed by N raw bytes that striprtf would read as text
        data = _drop_binary(data)
    found = _CODE_PAGE.search(data[:4096])
    encoding = f"cp{int(found.group(1))}" if found else "cp1252"
    from striprtf.striprtf import rtf_to_text

    source = data.decode("latin-1")  # RTF itself is 7-bit; 8-bit text comes as \'hh escapes
    with malformed("RTF"):
        try:
            text = rtf_to_text(source, encoding=encoding, errors="replace")
        except LookupError:  # a code page Python does not know
            text = rtf_to_text(source, encoding="cp1252", errors="replace")
    title = _TITLE.search(source[:65536])
    return normalise(text), title.group(1).strip() if title else None, []


def _drop_binary(data: bytes) -> bytes:
    out, position = bytearray(), 0
    for found in _BINARY.finditer(data):
        if found.start() < position:
            continue
        out += data[position : found.start()]
        position = found.end() + (1 if data[found.end() : found.end() + 1] == b" " else 0) + int(found[1])
    return bytes(out + data[position:])
