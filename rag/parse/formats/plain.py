"""Plain text: the first line is the title when it is short enough to be one."""

from __future__ import annotations

from rag.parse.formats.common import Parsed, decode, normalise

_TXT_TITLE_CHARS = 100  # a .txt file's first line is its title only when it is this short


def parse_txt(data: bytes) -> Parsed:
    text = normalise(decode(data))
    first_line = text.split("\n", 1)[0].strip()
    return text, first_line if len(first_line) <= _TXT_TITLE_CHARS else None, []
