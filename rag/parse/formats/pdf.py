"""PDF: a section per page."""

from __future__ import annotations

import io

from rag.parse.formats.common import Builder, Parsed, malformed
from rag.types import LoadError


def parse_pdf(data: bytes) -> Parsed:
    """A section per page (page = 1-based number); pages with no text get no section."""
    from pypdf import PasswordType, PdfReader
    from pypdf.errors import DependencyError

    builder = Builder()
    with malformed("PDF"):
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
