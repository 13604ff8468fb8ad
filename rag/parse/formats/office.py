"""Office Open XML: Word (.docx) and PowerPoint (.pptx). python-docx alone takes seconds to import, so
each parser imports its library when it runs."""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from rag.parse.formats.common import OLE_MAGIC, Builder, Parsed, malformed, one_line
from rag.parse.formats.containers import check_zip
from rag.types import LoadError

if TYPE_CHECKING:
    from docx.table import Table



def _refuse_ole(data: bytes, kind: str) -> None:
    """Word/PowerPoint save password-protected files as an OLE container, not a zip; say so."""
    if data.startswith(OLE_MAGIC):
        raise LoadError(
            f"not a {kind} package: password-protected Office files and old binary .doc/.ppt "
            "files are not supported"
        )


def parse_docx(data: bytes) -> Parsed:
    """Body paragraphs and tables in order; 'Title' and 'Heading N' paragraphs open sections."""
    _refuse_ole(data, "DOCX")
    check_zip(data, "DOCX")
    builder = Builder()
    first_heading = None
    with malformed("DOCX"):
        import docx
        from docx.table import Table

        document = docx.Document(io.BytesIO(data))
        for item in document.iter_inner_content():
            if isinstance(item, Table):
                builder.add(_docx_table(item))
                continue
            style = item.style.name if item.style is not None else ""
            heading = one_line(item.text)
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
                cells.append(one_line(cell.text))
        rows.append(" | ".join(c for c in cells if c))
    return "\n".join(rows)


def parse_pptx(data: bytes) -> Parsed:
    """A section per slide (page = slide number, heading = slide title): title, other shapes' text
    (groups and tables included), then the speaker notes."""
    _refuse_ole(data, "PPTX")
    check_zip(data, "PPTX")
    builder = Builder()
    first_title = None
    with malformed("PPTX"):
        import pptx

        presentation = pptx.Presentation(io.BytesIO(data))
        for number, slide in enumerate(presentation.slides, start=1):
            title_shape = slide.shapes.title
            title = one_line(title_shape.text_frame.text) if title_shape is not None else ""
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
            yield "\n".join(" | ".join(one_line(c.text) for c in row.cells) for row in shape.table.rows)
