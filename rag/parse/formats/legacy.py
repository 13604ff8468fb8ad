"""Word 97-2003 (.doc) and PowerPoint 97-2003 (.ppt) binary files. No library on PyPI with a permissive
licence reads their text (antiword and catdoc are GPL programs, Apache Tika needs Java), so each is
refused with a one-line reason that says how to convert it. A file with one of these names that is
really RTF, HTML or a newer Office zip (Word saves all three as ".doc" on request) is read as what it is."""

from __future__ import annotations

from collections.abc import Callable

from rag.parse.formats.common import OLE_MAGIC, Parsed
from rag.types import LoadError


def legacy_parser(
    kind: str, modern: str, reread: Callable[[bytes], Parsed | None]
) -> Callable[[bytes], Parsed]:
    """The parser for ``kind`` (".doc"): ``reread`` reads the content as what it really is (None when it
    is not something else), and a real binary file gets the conversion hint."""

    def parse(data: bytes) -> Parsed:
        if not data.startswith(OLE_MAGIC) and (parsed := reread(data)) is not None:
            return parsed
        raise LoadError(
            f"old binary {kind} file: sightline reads {modern}; convert it first, e.g. "
            f"`soffice --headless --convert-to {modern.lstrip('.')} FILE{kind}` (LibreOffice)"
        )

    return parse
