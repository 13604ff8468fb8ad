"""Real files of every supported type, written into a folder, for tests (loaders, scan, ingest sync,
crash recovery). ``scripts/build_samples.py`` builds the committed sample corpus with these same writers,
so there is one PDF writer and one DOCX writer in the repository.

No PDF library that writes is a dependency, so :func:`pdf_bytes` writes a small but valid PDF by hand:
one Helvetica text page per entry, WinAnsi encoding, a proper xref table and an /Info title.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
import textwrap
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import docx
import pptx
from pypdf import PdfReader, PdfWriter

# Letter page, 1-inch margins, 11 pt Helvetica on 14 pt leading: ~85 characters by 48 lines.
_PAGE_W, _PAGE_H, _MARGIN, _FONT_SIZE, _LEADING = 612, 792, 72, 11, 14
_WRAP_CHARS = 85
_MAX_LINES = (_PAGE_H - 2 * _MARGIN) // _LEADING

# A fixed zip timestamp so that rebuilding DOCX/PPTX files gives identical bytes.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)

DocxItem = str | Sequence[Sequence[str]]


def _pdf_string(s: str) -> bytes:
    """A PDF literal string in WinAnsi (cp1252); characters outside it become '?'."""
    raw = s.encode("cp1252", errors="replace")
    return b"(" + raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)") + b")"


def _page_lines(text: str) -> list[str]:
    lines: list[str] = []
    for para in text.split("\n"):
        lines.extend(textwrap.wrap(para, _WRAP_CHARS) or [""])
    return lines


def pdf_bytes(pages: Sequence[str], title: str | None = None) -> bytes:
    """A valid PDF with one page per entry of ``pages`` (long lines wrapped, '\\n' starts a new line).

    Raises ValueError when a page's text does not fit on one page: page numbers are the point.
    """
    objects: list[bytes] = []  # object n is objects[n - 1]

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    catalog = add(b"")  # filled in once the page tree exists
    pages_obj = add(b"")
    font = add(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    info = add(
        b"<< /Producer (sightline docfactory)" + (b" /Title " + _pdf_string(title) if title else b"") + b" >>"
    )
    kids: list[int] = []
    for number, text in enumerate(pages, start=1):
        lines = _page_lines(text)
        if len(lines) > _MAX_LINES:
            raise ValueError(f"page {number} has {len(lines)} lines; at most {_MAX_LINES} fit")
        ops = [
            b"BT",
            b"/F1 %d Tf" % _FONT_SIZE,
            b"%d TL" % _LEADING,
            b"%d %d Td" % (_MARGIN, _PAGE_H - _MARGIN),
        ]
        for line in lines:
            # A blank line is drawn as one space so text extraction keeps the paragraph break.
            ops.append(_pdf_string(line or " ") + b" Tj T*")
        ops.append(b"ET")
        stream = b"\n".join(ops)
        contents = add(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
        kids.append(
            add(
                b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 %d %d] /Resources << /Font << /F1 %d 0 R >> >>"
                b" /Contents %d 0 R >>" % (pages_obj, _PAGE_W, _PAGE_H, font, contents)
            )
        )
    objects[catalog - 1] = b"<< /Type /Catalog /Pages %d 0 R >>" % pages_obj
    kid_refs = b" ".join(b"%d 0 R" % k for k in kids)
    objects[pages_obj - 1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kid_refs, len(kids))

    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    out += b"trailer\n<< /Size %d /Root %d 0 R /Info %d 0 R >>\n" % (len(objects) + 1, catalog, info)
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


def make_pdf(path: Path, pages: Sequence[str], title: str | None = None) -> Path:
    path.write_bytes(pdf_bytes(pages, title))
    return path


def _write_zip_reproducibly(path: Path, data: bytes) -> Path:
    """Rewrite an Office zip with fixed timestamps: python-docx/pptx stamp every member with 'now'."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            info = zipfile.ZipInfo(item.filename, _ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED  # a ZipInfo ignores the ZipFile's default
            dst.writestr(info, src.read(item))
    path.write_bytes(out.getvalue())
    return path


def make_docx(path: Path, body: Sequence[DocxItem], title: str | None = None) -> Path:
    """A DOCX from ``body``: a string is a paragraph ('# x' / '## x' make Heading 1 / 2, '#! x' a
    Title-style paragraph); a list of rows (lists of cell strings) is a table."""
    document = docx.Document()
    document.core_properties.title = title or ""
    for item in body:
        if isinstance(item, str):
            if item.startswith("#! "):
                document.add_paragraph(item[3:], style="Title")
            elif item.startswith("#"):
                marks, _, text = item.partition(" ")
                document.add_heading(text, level=len(marks))
            else:
                document.add_paragraph(item)
        else:
            table = document.add_table(rows=len(item), cols=max(len(row) for row in item))
            for cells, row in zip(table.rows, item, strict=True):
                for cell, value in zip(cells.cells, row, strict=False):
                    cell.text = value
    buf = io.BytesIO()
    document.save(buf)
    return _write_zip_reproducibly(path, buf.getvalue())


def make_pptx(path: Path, slides: Sequence[tuple[str, str]], notes: Mapping[int, str] | None = None) -> Path:
    """A PPTX with one 'Title and Content' slide per (title, body); ``notes`` maps a 1-based slide
    number to its speaker notes. An empty title leaves the slide without a title placeholder text."""
    presentation = pptx.Presentation()
    layout = presentation.slide_layouts[1]
    for number, (title, text) in enumerate(slides, start=1):
        slide = presentation.slides.add_slide(layout)
        if title:
            slide.shapes.title.text = title
        slide.placeholders[1].text = text
        if notes and number in notes:
            slide.notes_slide.notes_text_frame.text = notes[number]
    buf = io.BytesIO()
    presentation.save(buf)
    return _write_zip_reproducibly(path, buf.getvalue())


def make_html(path: Path, body: str, title: str | None = None, head: str = "") -> Path:
    title_tag = f"<title>{title}</title>" if title else ""
    path.write_text(
        f'<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8">{title_tag}{head}</head>\n'
        f"<body>\n{body}\n</body>\n</html>\n",
        encoding="utf-8",
    )
    return path


def make_text(path: Path, text: str, encoding: str = "utf-8") -> Path:
    """Any text format (txt, md, rst, html, csv, json) written as-is."""
    path.write_bytes(text.encode(encoding))
    return path


def make_csv(path: Path, rows: Sequence[Sequence[str]], delimiter: str = ",") -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f, delimiter=delimiter).writerows(rows)
    return path


def make_json(path: Path, value: Any) -> Path:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def make_jsonl(path: Path, records: Sequence[Any]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def make_document(path: Path, text: str) -> Path:
    """A valid file of the type ``path``'s suffix names, whose loaded text contains ``text``: for tests
    that need 'some document of each kind' (sync, crash recovery) rather than a particular layout."""
    suffix = path.suffix.lower()
    if suffix == ".pdf":
        return make_pdf(path, [text])
    if suffix == ".docx":
        return make_docx(path, [text])
    if suffix == ".pptx":
        return make_pptx(path, [("Slide", text)])
    if suffix in (".html", ".htm"):
        return make_html(path, f"<p>{text}</p>")
    if suffix == ".csv":
        return make_csv(path, [["text"], [text]])
    if suffix == ".json":
        return make_json(path, {"text": text})
    if suffix == ".jsonl":
        return make_jsonl(path, [{"text": text}])
    return _make_other(path, suffix, text)


def _make_other(path: Path, suffix: str, text: str) -> Path:
    """The types issue 31 added (tests/formatfactory.py); anything else is written as plain text."""
    from tests import formatfactory as ff

    rows = [["text"], [text]]
    makers: dict[str, Any] = {
        ".xlsx": lambda: ff.make_xlsx(path, {"Sheet1": rows}),
        ".xlsm": lambda: ff.make_xlsx(path, {"Sheet1": rows}),
        ".xls": lambda: ff.make_xls(path, {"Sheet1": rows}),
        ".ods": lambda: ff.make_ods(path, {"Sheet1": rows}),
        ".tsv": lambda: make_csv(path, rows, delimiter="\t"),
        ".odt": lambda: ff.make_odt(path, [("p", text)]),
        ".odp": lambda: ff.make_odp(path, [("Slide", text)]),
        ".epub": lambda: ff.make_epub(path, [("Chapter", text)]),
        ".rtf": lambda: ff.make_rtf(path, [text]),
        ".doc": lambda: ff.make_rtf(path, [text]),  # Word's "Rich Text (*.doc)": read as the RTF it is
        ".ppt": lambda: make_pptx(path, [("Slide", text)]),  # a PPTX misnamed .ppt: read as what it is
        ".eml": lambda: ff.make_eml(path, "Note", text),
        ".msg": lambda: ff.make_msg(path, "Note", text),
        ".org": lambda: ff.make_org(path, "Note", [("Heading", text)]),
    }
    if suffix in makers:
        return makers[suffix]()
    if suffix in ff.IMAGE_SUFFIXES:
        return ff.make_image(path, [text])
    return make_text(path, text + "\n")


def make_tree(root: Path, files: Mapping[str, str | bytes]) -> Path:
    """Write ``{relative/path: content}`` under ``root``, creating folders; returns ``root``."""
    for rel, content in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content, encoding="utf-8")
    return root


# Hostile files: each should make the loader raise LoadError with a reason, never crash ingest.


def make_empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def make_corrupt_pdf(path: Path) -> Path:
    """A real PDF cut off halfway, as an interrupted download leaves it."""
    data = pdf_bytes(["Page one of a file that never finished downloading.", "Page two."])
    path.write_bytes(data[: len(data) // 2])
    return path


def make_encrypted_pdf(path: Path, pages: Sequence[str], user_password: str = "secret") -> Path:
    """An RC4-encrypted PDF (pypdf's pure-Python fallback can write and read RC4). With
    ``user_password=""`` anyone may open it: only the owner's permissions are restricted."""
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf_bytes(pages))))
    writer.encrypt(user_password=user_password, owner_password="owner", algorithm="RC4-128")
    with path.open("wb") as f:
        writer.write(f)
    return path


def make_corrupt_office(path: Path) -> Path:
    """A .docx/.pptx that is a real Office zip cut short, so the zip directory is missing."""
    buf = io.BytesIO()
    if path.suffix.lower() == ".pptx":
        pptx.Presentation().save(buf)
    else:
        docx.Document().save(buf)
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return path


def make_binary_with_txt_suffix(path: Path) -> Path:
    """Binary bytes (a PNG header and NULs) under a text extension."""
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    return path


def make_utf16(path: Path, text: str) -> Path:
    """UTF-16 with a BOM, as Windows tools write 'Unicode' text."""
    path.write_bytes(text.encode("utf-16"))
    return path


def make_invalid_utf8(path: Path) -> Path:
    """Latin-1 bytes that are not valid UTF-8 (and carry no UTF-16 BOM)."""
    path.write_bytes("Caf\u00e9 cr\u00e8me, na\u00efve fa\u00e7ade\n".encode("latin-1"))
    return path


def make_invalid_utf16(path: Path) -> Path:
    """A UTF-16 BOM followed by a lone high surrogate: what a tool that cut a file mid-character
    leaves behind."""
    path.write_bytes(codecs.BOM_UTF16_LE + "Harbour light ".encode("utf-16-le") + b"\x00\xd8" + b"a\x00")
    return path


def make_big_text(path: Path, size: int) -> Path:
    """A text file of exactly ``size`` bytes of prose lines, written in blocks (memory stays flat)."""
    line = b"The keeper trimmed the wick and wound the clockwork before the evening watch.\n"
    block = line * ((1 << 20) // len(line))
    with path.open("wb") as f:
        written = 0
        while written < size:
            piece = block[: size - written]
            f.write(piece)
            written += len(piece)
    return path


def make_long_line(path: Path, words: int) -> Path:
    """One line of prose with no newline at all, ``words`` words long."""
    vocab = ["beam", "lantern", "reef", "gale", "keeper", "prism", "signal", "tide"]
    path.write_text(" ".join(f"{vocab[i % len(vocab)]}{i}" for i in range(words)), encoding="utf-8")
    return path


def make_space_run(path: Path, spaces: int) -> Path:
    """Markdown whose heading and paragraph each hold a long run of spaces between two words: the
    shape that made the trailing-space and ATX-heading regexes quadratic (40 kB took a minute)."""
    path.write_text(f"# Heading{' ' * spaces}end\n\nbefore{' ' * spaces}after\n", encoding="utf-8")
    return path


def make_deep_html(path: Path, depth: int) -> Path:
    """Text nested ``depth`` elements deep, as generated pages and hostile ones are."""
    return make_html(path, "<div><span>" * depth + "Deep inside the tower." + "</span></div>" * depth)


def make_json_with_lone_surrogate(path: Path) -> Path:
    r"""Valid JSON whose strings decode to text no database can store: a lone surrogate ('\ud800') in
    a value and a NUL in the title."""
    path.write_text('{"title": "Log\\u0000book", "entry": "lamp \\ud800 lit at dusk"}\n', encoding="ascii")
    return path


def make_docx_bomb(path: Path, inflated_bytes: int) -> Path:
    """A real DOCX whose main part inflates to ``inflated_bytes`` of XML (a run of spaces inside one
    text element) from about a thousandth of that on disk: a compression bomb."""
    buf = io.BytesIO()
    docx.Document().save(buf)
    with (
        zipfile.ZipFile(buf) as src,
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as dst,
    ):
        for item in src.infolist():
            data = src.read(item)
            if item.filename != "word/document.xml":
                dst.writestr(item.filename, data)
                continue
            head, tail = data.split(b"<w:body>", 1)
            with dst.open("word/document.xml", "w", force_zip64=True) as f:
                f.write(head + b"<w:body><w:p><w:r><w:t>")
                block = b" " * (1 << 20)
                for _ in range(inflated_bytes >> 20):
                    f.write(block)
                f.write(b"x</w:t></w:r></w:p>" + tail)
    return path


def make_docx_text_bomb(path: Path, chars: int) -> Path:
    """A real DOCX whose one paragraph is ``chars`` characters of a repeated sentence: real text, not
    whitespace, so it survives extraction; deflate shrinks it about a thousandfold on disk."""
    sentence = "The keeper trimmed the wick and wound the clockwork before dusk. "
    return make_docx(path, [(sentence * (chars // len(sentence) + 1))[:chars]])


def make_long_path(root: Path, min_chars: int, name: str = "deep.md", text: str = "# Deep\n") -> Path:
    """A file nested so deep that its absolute path is at least ``min_chars`` long, which may exceed
    PATH_MAX (4096): made with directory file descriptors, since such a path cannot be used whole."""
    part = "nested-folder-" + "x" * 50
    depth = max(1, (min_chars - len(str(root))) // (len(part) + 1) + 1)
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir(part, dir_fd=fd)
            child = os.open(part, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        out = os.open(name, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(out, text.encode())
        os.close(out)
    finally:
        os.close(fd)
    return root.joinpath(*[part] * depth, name)
