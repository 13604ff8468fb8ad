"""PDF: a section per page. Text comes from the page's text layer (pypdf); a page without one whose
content is an image (a scan) is rendered by pypdfium2 and read by OCR (rag.parse.formats.ocr)."""

from __future__ import annotations

import io
import time

from rag.parse.formats.common import Builder, Parsed, malformed
from rag.parse.formats.ocr import check_time, recognise
from rag.types import LoadError

# 10-point print is 28 pixels high at 200 dpi; at 150 dpi (21 pixels) the recogniser ran words together
# ("Pageone:theLongshipslight."), at 200 it kept the spaces, for twice the time of 150 (bench ocr)
OCR_DPI = 200
_MAX_RENDER_SIDE = 3000  # a poster-sized page is rendered at a lower resolution, not at OCR_DPI


def parse_pdf(data: bytes) -> Parsed:
    """A section per page (page = 1-based number); pages with no text get no section."""
    from pypdf import PasswordType, PdfReader
    from pypdf.errors import DependencyError

    with malformed("PDF"):
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            try:
                opened = reader.decrypt("")
            except DependencyError as e:
                raise LoadError(f"encrypted PDF that this installation cannot decrypt: {e}") from e
            if opened == PasswordType.NOT_DECRYPTED:
                raise LoadError("encrypted PDF: it needs a password to open")
        pages = [page.extract_text() for page in reader.pages]
        title = reader.metadata.title if reader.metadata else None
    blank = [number for number, text in enumerate(pages) if not text.strip()]
    scanned = _ocr_pages(data, blank) if blank else {}
    builder = Builder()
    for number, text in enumerate(pages):
        builder.section(page=number + 1)
        builder.add(scanned.get(number, text))
    text, sections = builder.build()
    if not text:
        reason = "OCR found no text in its images" if scanned else "its pages have no text and no images"
        raise LoadError(f"no extractable text in this PDF: {reason}")
    return text, title, sections


def _ocr_pages(data: bytes, numbers: list[int]) -> dict[int, str]:
    """OCR's text for each of the (0-based) pages ``numbers`` whose content includes an image."""
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    found: dict[int, str] = {}
    with malformed("PDF"):
        document = pdfium.PdfDocument(data)
        try:
            images = [n for n in numbers if _has_image(document[n], pdfium_c.FPDF_PAGEOBJ_IMAGE)]
            started = time.monotonic()
            for done, number in enumerate(images):
                check_time(done, len(images), started)
                page = document[number]
                width, height = page.get_size()
                scale = min(OCR_DPI / 72, _MAX_RENDER_SIDE / max(width, height, 1))
                found[number] = recognise(page.render(scale=scale, grayscale=True).to_pil())
        finally:
            document.close()
    return found


def _has_image(page: object, image_type: int) -> bool:
    return any(True for _ in page.get_objects(filter=[image_type], max_depth=2))  # type: ignore[attr-defined]
