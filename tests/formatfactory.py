"""Writers for the formats issue 31 added (spreadsheets, OpenDocument, EPUB, RTF, mail, Org, images and
scanned PDFs), for tests. Each writes the few parts its format needs by hand (no library here writes
them, except xlwt for .xls and Pillow for images), the way a real program would lay them out.

:func:`cfb_bytes` is a small writer of OLE compound files (the container of Outlook .msg files), enough
for the .msg tests: streams under 4,096 bytes in the mini stream, larger ones in sectors of their own.
"""

from __future__ import annotations

import io
import itertools
import struct
import zipfile
from collections.abc import Mapping, Sequence
from email.message import EmailMessage
from pathlib import Path
from xml.sax.saxutils import escape

Rows = Sequence[Sequence[object]]
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"  # Debian's fonts-dejavu-core (.ci/run)
HEIC_SAMPLE = Path(__file__).parent / "data" / "creach.heic"  # 'Phare du Creach, Ushant, 1863'
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp", ".heic", ".heif"}
)
UNWRITABLE = frozenset({".heic", ".heif"})  # no permissive HEIC encoder on PyPI: HEIC_SAMPLE is one


def _zip(path: Path, parts: Mapping[str, str | bytes], mimetype: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        if mimetype:  # ODF and EPUB: first, uncompressed, so that its type shows in the first bytes
            z.writestr(zipfile.ZipInfo("mimetype", _ZIP_EPOCH), mimetype, zipfile.ZIP_STORED)
        for name, content in parts.items():
            z.writestr(zipfile.ZipInfo(name, _ZIP_EPOCH), content, zipfile.ZIP_DEFLATED)
    return path


# --- spreadsheets ---------------------------------------------------------------------------------------

_XLSX_NS = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
_REL_NS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_PKG_REL = "http://schemas.openxmlformats.org/package/2006/relationships"
_OOXML_CT = "application/vnd.openxmlformats-officedocument.spreadsheetml"


def _column(index: int) -> str:
    name = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        name = chr(65 + rest) + name
    return name


def xlsx_sheet_xml(rows: Rows) -> str:
    cells = []
    for r, row in enumerate(rows, start=1):
        out = []
        for c, value in enumerate(row):
            ref = f"{_column(c)}{r}"
            if isinstance(value, int | float) and not isinstance(value, bool):
                out.append(f'<c r="{ref}"><v>{value}</v></c>')
            elif value not in (None, ""):
                out.append(f'<c r="{ref}" t="inlineStr"><is><t>{escape(str(value))}</t></is></c>')
        cells.append(f'<row r="{r}">{"".join(out)}</row>')
    return f'<?xml version="1.0"?><worksheet {_XLSX_NS}><sheetData>{"".join(cells)}</sheetData></worksheet>'


def make_xlsx(path: Path, sheets: Mapping[str, Rows | str]) -> Path:
    """A workbook with one sheet per entry (rows, or a worksheet's raw XML for hostile tests)."""
    names = list(sheets)
    overrides = "".join(
        f'<Override PartName="/xl/worksheets/sheet{i}.xml" ContentType="{_OOXML_CT}.worksheet+xml"/>'
        for i in range(1, len(names) + 1)
    )
    parts: dict[str, str | bytes] = {
        "[Content_Types].xml": '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/'
        '2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.'
        'relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName='
        f'"/xl/workbook.xml" ContentType="{_OOXML_CT}.sheet.main+xml"/>{overrides}</Types>',
        "_rels/.rels": f'<?xml version="1.0"?><Relationships xmlns="{_PKG_REL}"><Relationship Id="rId1" '
        f'Type="{_REL_NS}/officeDocument" Target="xl/workbook.xml"/></Relationships>',
        "xl/workbook.xml": f'<?xml version="1.0"?><workbook {_XLSX_NS} xmlns:r="{_REL_NS}"><sheets>'
        + "".join(
            f'<sheet name="{escape(n)}" sheetId="{i}" r:id="rId{i}"/>' for i, n in enumerate(names, start=1)
        )
        + "</sheets></workbook>",
        "xl/_rels/workbook.xml.rels": f'<?xml version="1.0"?><Relationships xmlns="{_PKG_REL}">'
        + "".join(
            f'<Relationship Id="rId{i}" Type="{_REL_NS}/worksheet" Target="worksheets/sheet{i}.xml"/>'
            for i in range(1, len(names) + 1)
        )
        + "</Relationships>",
    }
    for i, name in enumerate(names, start=1):
        content = sheets[name]
        parts[f"xl/worksheets/sheet{i}.xml"] = (
            content if isinstance(content, str) else xlsx_sheet_xml(content)
        )
    return _zip(path, parts)


def make_xls(path: Path, sheets: Mapping[str, Rows]) -> Path:
    import xlwt

    book = xlwt.Workbook()
    for name, rows in sheets.items():
        sheet = book.add_sheet(name)
        for r, row in enumerate(rows):
            for c, value in enumerate(row):
                sheet.write(r, c, value)
    book.save(str(path))
    return path


_ODF_NS = (
    'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
    'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" '
    'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" '
    'xmlns:draw="urn:oasis:names:tc:opendocument:xmlns:drawing:1.0" '
    'xmlns:presentation="urn:oasis:names:tc:opendocument:xmlns:presentation:1.0" '
    'xmlns:dc="http://purl.org/dc/elements/1.1/" '
    'xmlns:meta="urn:oasis:names:tc:opendocument:xmlns:meta:1.0"'
)
_ODF_MIME = "application/vnd.oasis.opendocument."


def _odf(path: Path, kind: str, body: str, title: str | None = None) -> Path:
    manifest = (
        '<?xml version="1.0"?><manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:'
        f'manifest:1.0" manifest:version="1.2"><manifest:file-entry manifest:full-path="/" '
        f'manifest:media-type="{_ODF_MIME}{kind}"/><manifest:file-entry manifest:full-path="content.xml" '
        'manifest:media-type="text/xml"/></manifest:manifest>'
    )
    parts = {
        "META-INF/manifest.xml": manifest,
        "content.xml": f'<?xml version="1.0"?><office:document-content {_ODF_NS} office:version="1.2">'
        f"<office:body>{body}</office:body></office:document-content>",
    }
    if title:
        parts["meta.xml"] = (
            f'<?xml version="1.0"?><office:document-meta {_ODF_NS}><office:meta><dc:title>{escape(title)}'
            "</dc:title></office:meta></office:document-meta>"
        )
    return _zip(path, parts, f"{_ODF_MIME}{kind}")


def ods_table_xml(name: str, rows: Rows) -> str:
    out = []
    for row in rows:
        cells = []
        for value in row:
            if isinstance(value, int | float) and not isinstance(value, bool):
                cells.append(
                    f'<table:table-cell office:value-type="float" office:value="{value}">'
                    f"<text:p>{value}</text:p></table:table-cell>"
                )
            else:
                cells.append(
                    f'<table:table-cell office:value-type="string"><text:p>{escape(str(value))}</text:p>'
                    "</table:table-cell>"
                )
        out.append(f"<table:table-row>{''.join(cells)}</table:table-row>")
    return f'<table:table table:name="{escape(name)}">{"".join(out)}</table:table>'


def make_ods(path: Path, sheets: Mapping[str, Rows | str]) -> Path:
    """One table per entry: rows, or the table's raw XML (hostile tests)."""
    tables = "".join(t if isinstance(t, str) else ods_table_xml(n, t) for n, t in sheets.items())
    return _odf(path, "spreadsheet", f"<office:spreadsheet>{tables}</office:spreadsheet>")


def make_odt(path: Path, blocks: Sequence[tuple[str, str]], title: str | None = None) -> Path:
    """``blocks``: ("h", heading) or ("p", paragraph) or ("raw", XML) in order."""
    xml = []
    for kind, text in blocks:
        if kind == "h":
            xml.append(f'<text:h text:outline-level="1">{escape(text)}</text:h>')
        elif kind == "p":
            xml.append(f"<text:p>{escape(text)}</text:p>")
        else:
            xml.append(text)
    return _odf(path, "text", f"<office:text>{''.join(xml)}</office:text>", title)


def make_odp(path: Path, slides: Sequence[tuple[str, str]], notes: Mapping[int, str] | None = None) -> Path:
    pages = []
    for number, (title, body) in enumerate(slides, start=1):
        note = (notes or {}).get(number)
        note_xml = (
            f"<presentation:notes><draw:frame><draw:text-box><text:p>{escape(note)}</text:p></draw:text-box>"
            "</draw:frame></presentation:notes>"
            if note
            else ""
        )
        pages.append(
            f'<draw:page draw:name="page{number}"><draw:frame presentation:class="title"><draw:text-box>'
            f"<text:p>{escape(title)}</text:p></draw:text-box></draw:frame><draw:frame><draw:text-box>"
            f"<text:p>{escape(body)}</text:p></draw:text-box></draw:frame>{note_xml}</draw:page>"
        )
    return _odf(path, "presentation", f"<office:presentation>{''.join(pages)}</office:presentation>")


# --- books, rich text, mail, org ------------------------------------------------------------------------


def make_epub(path: Path, chapters: Sequence[tuple[str, str]], title: str = "A Book") -> Path:
    """``chapters``: (heading, paragraph) each, in reading order; an EPUB 3 nav page is included."""
    opf = "http://www.idpf.org/2007/opf"
    items = ['<item id="nav" href="nav.xhtml" media-type="application/xhtml+xml" properties="nav"/>']
    items += [
        f'<item id="c{i}" href="text/ch{i}.xhtml" media-type="application/xhtml+xml"/>'
        for i in range(len(chapters))
    ]
    spine = "".join(f'<itemref idref="c{i}"/>' for i in range(len(chapters)))
    parts: dict[str, str | bytes] = {
        "META-INF/container.xml": '<?xml version="1.0"?><container version="1.0" xmlns="urn:oasis:names:tc:'
        'opendocument:xmlns:container"><rootfiles><rootfile full-path="OEBPS/book.opf" media-type='
        '"application/oebps-package+xml"/></rootfiles></container>',
        "OEBPS/book.opf": f'<?xml version="1.0"?><package xmlns="{opf}" version="3.0"><metadata xmlns:dc='
        f'"http://purl.org/dc/elements/1.1/"><dc:title>{escape(title)}</dc:title></metadata><manifest>'
        f"{''.join(items)}</manifest><spine>{spine}</spine></package>",
        "OEBPS/nav.xhtml": '<html xmlns="http://www.w3.org/1999/xhtml"><body><nav><ol><li>Contents</li>'
        "</ol></nav></body></html>",
    }
    for i, (heading, paragraph) in enumerate(chapters):
        parts[f"OEBPS/text/ch{i}.xhtml"] = (
            f'<?xml version="1.0" encoding="utf-8"?><html xmlns="http://www.w3.org/1999/xhtml"><head><title>'
            f"{escape(heading)}</title></head><body><h1>{escape(heading)}</h1><p>{escape(paragraph)}</p>"
            "</body></html>"
        )
    return _zip(path, parts, "application/epub+zip")


def rtf_bytes(paragraphs: Sequence[str], title: str | None = None) -> bytes:
    """RTF as Word writes it: cp1252 text, other characters as \\uN? escapes."""

    def escaped(text: str) -> str:
        out = []
        for ch in text:
            if ch in "\\{}":
                out.append("\\" + ch)
            elif ord(ch) < 128:
                out.append(ch)
            else:
                code = ord(ch)
                out.append(f"\\u{code if code < 32768 else code - 65536}?")
        return "".join(out)

    info = f"{{\\info{{\\title {escaped(title)}}}}}" if title else ""
    body = "".join(f"{{\\pard {escaped(p)}\\par}}\n" for p in paragraphs)
    return f"{{\\rtf1\\ansi\\ansicpg1252\\deff0{{\\fonttbl{{\\f0 Times;}}}}{info}\n{body}}}".encode("ascii")


def make_rtf(path: Path, paragraphs: Sequence[str], title: str | None = None) -> Path:
    path.write_bytes(rtf_bytes(paragraphs, title))
    return path


def eml_bytes(
    subject: str, body: str, attachments: Sequence[tuple[str, bytes]] = (), html: str | None = None
) -> bytes:
    message = EmailMessage()
    message["From"] = "Harbour Master <harbour@example.org>"
    message["To"] = "keeper@example.org"
    message["Date"] = "Mon, 06 May 2024 09:30:00 +0100"
    message["Subject"] = subject
    message.set_content(body)
    if html is not None:
        message.add_alternative(html, subtype="html")
    for name, content in attachments:
        message.add_attachment(content, maintype="application", subtype="octet-stream", filename=name)
    return message.as_bytes()


def make_eml(path: Path, subject: str, body: str, attachments: Sequence[tuple[str, bytes]] = ()) -> Path:
    path.write_bytes(eml_bytes(subject, body, attachments))
    return path


def make_org(path: Path, title: str, sections: Sequence[tuple[str, str]]) -> Path:
    lines = [f"#+TITLE: {title}", ""]
    for heading, body in sections:
        lines += [f"* {heading}", body, ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


# --- Outlook .msg in a compound file --------------------------------------------------------------------


def _props_stream(header_bytes: int, times: Mapping[int, int] = {}) -> bytes:
    entries = b"".join(struct.pack("<IIQ", tag, 2, value) for tag, value in times.items())
    return bytes(header_bytes) + entries


def _utf16(value: str) -> bytes:
    return value.encode("utf-16-le")


def msg_bytes(
    subject: str, body: str, sender: str, to: str, attachments: Sequence[tuple[str, bytes]] = ()
) -> bytes:
    """An Outlook message: subject, plain body, sender, display To, a submit time, attachments."""
    filetime = (1_714_984_200 + 11_644_473_600) * 10_000_000  # 2024-05-06 08:30 UTC
    streams: dict[str, bytes] = {
        "__properties_version1.0": _props_stream(32, {0x00390040: filetime}),
        "__substg1.0_0037001F": _utf16(subject),
        "__substg1.0_1000001F": _utf16(body),
        "__substg1.0_0C1A001F": _utf16(sender),
        "__substg1.0_0E04001F": _utf16(to),
    }
    for number, (name, content) in enumerate(attachments):
        prefix = f"__attach_version1.0_#{number:08X}/"
        streams[prefix + "__properties_version1.0"] = _props_stream(8)
        streams[prefix + "__substg1.0_3707001F"] = _utf16(name)
        streams[prefix + "__substg1.0_37010102"] = content
    return cfb_bytes(streams)


def make_msg(path: Path, subject: str, body: str, attachments: Sequence[tuple[str, bytes]] = ()) -> Path:
    path.write_bytes(msg_bytes(subject, body, "Harbour Master", "Keeper", attachments))
    return path


_FREE, _END, _FATSECT = 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFD


def cfb_bytes(streams: Mapping[str, bytes]) -> bytes:
    """An OLE compound file (version 3, 512-byte sectors) holding ``streams`` ("storage/stream" paths)."""
    # directory entries: (name, type, children, stream)
    entries: list[dict] = [{"name": "Root Entry", "type": 5, "kids": [], "data": b""}]
    storages: dict[str, int] = {"": 0}
    for path in sorted(streams):
        parent = ""
        for part in path.split("/")[:-1]:
            key = f"{parent}{part}/"
            if key not in storages:
                storages[key] = len(entries)
                entries[storages[parent]]["kids"].append(len(entries))
                entries.append({"name": part, "type": 1, "kids": [], "data": b""})
            parent = key
        entries[storages[parent]]["kids"].append(len(entries))
        entries.append({"name": path.split("/")[-1], "type": 2, "kids": [], "data": streams[path]})

    sectors: list[bytes] = []
    fat: list[int] = []

    def chain(data: bytes) -> int:
        count = max(1, -(-len(data) // 512))
        start = len(sectors)
        for i in range(count):
            sectors.append(data[i * 512 : (i + 1) * 512].ljust(512, b"\0"))
            fat.append(start + i + 1 if i + 1 < count else _END)
        return start

    mini = bytearray()
    minifat: list[int] = []
    for entry in entries:
        data = entry["data"]
        if entry["type"] != 2:
            entry["start"] = _END if entry["type"] == 1 else 0
            continue
        if len(data) >= 4096:
            entry["start"] = chain(data)
        elif data:
            count = -(-len(data) // 64)
            entry["start"] = len(mini) // 64
            mini += data.ljust(count * 64, b"\0")
            first = len(minifat)
            minifat += [first + i + 1 if i + 1 < count else _END for i in range(count)]
        else:
            entry["start"] = _END
    entries[0]["start"] = chain(bytes(mini)) if mini else _END
    entries[0]["size"] = len(mini)
    minifat_start = chain(b"".join(struct.pack("<I", v) for v in minifat)) if minifat else _END
    minifat_sectors = -(-len(minifat) * 4 // 512)

    def sort_key(i: int) -> tuple[int, str]:
        return len(entries[i]["name"]), entries[i]["name"].upper()

    raw = bytearray()
    for entry in entries:
        kids = sorted(entry["kids"], key=sort_key)
        for a, b in itertools.pairwise(kids):  # each child's right sibling is the next one
            entries[a]["right"] = b
        entry["child"] = kids[0] if kids else _FREE
    for entry in entries:
        name = _utf16(entry["name"]) + b"\0\0"
        size = entry.get("size", len(entry["data"]))
        raw += name.ljust(64, b"\0") + struct.pack("<HBB", len(name), entry["type"], 1)
        raw += struct.pack("<III", _FREE, entry.get("right", _FREE), entry["child"])
        raw += bytes(16 + 4 + 16) + struct.pack("<IQ", entry["start"], size)
    directory_start = chain(bytes(raw))

    fat_sectors = 1
    while len(fat) + fat_sectors > fat_sectors * 128:
        fat_sectors += 1
    fat_start = len(sectors)
    fat += [_FATSECT] * fat_sectors
    fat += [_FREE] * (fat_sectors * 128 - len(fat))
    packed = b"".join(struct.pack("<I", v) for v in fat)
    sectors += [packed[i * 512 : (i + 1) * 512] for i in range(fat_sectors)]
    difat = [fat_start + i for i in range(fat_sectors)] + [_FREE] * (109 - fat_sectors)
    header = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(16)
    header += struct.pack("<HHHHH", 0x3E, 3, 0xFFFE, 9, 6) + bytes(6)
    header += struct.pack(
        "<IIIIIIIII", 0, fat_sectors, directory_start, 0, 4096, minifat_start, minifat_sectors, _END, 0
    )
    header += b"".join(struct.pack("<I", v) for v in difat)
    return bytes(header) + b"".join(sectors)


# --- images and scans -----------------------------------------------------------------------------------


def text_image(lines: Sequence[str], size: int = 28, width: int | None = None) -> object:
    """Black text on white, as a scanner or a screenshot gives it (a PIL image)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(FONT, size, layout_engine=ImageFont.Layout.BASIC)
    lines = [part for line in lines for part in line.split("\n") if part.strip()] or [" "]
    width = width or max(int(font.getlength(line)) for line in lines) + 2 * size
    image = Image.new("RGB", (width, (len(lines) + 1) * size * 2), "white")
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((size, size + i * size * 2), line, font=font, fill="black")
    return image


def make_image(path: Path, lines: Sequence[str]) -> Path:
    """``lines`` rendered into an image of the type ``path``'s suffix names; for HEIC, which nothing here
    can write, a copy of HEIC_SAMPLE (whatever ``lines`` say)."""
    if path.suffix.lower() in UNWRITABLE:
        path.write_bytes(HEIC_SAMPLE.read_bytes())
        return path
    formats = {".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF", ".gif": "GIF"}
    image = text_image(lines)
    image.save(path, format=formats.get(path.suffix.lower(), path.suffix.lstrip(".").upper()))  # type: ignore[attr-defined]
    return path


def make_photo(path: Path) -> Path:
    """A picture with no writing in it: sky, sea and a sun (gradients and shapes, some noise)."""
    from PIL import Image, ImageDraw, ImageFilter

    image = Image.linear_gradient("L").resize((640, 480)).convert("RGB")
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 300, 640, 480), fill=(20, 60, 110))
    draw.ellipse((420, 60, 520, 160), fill=(250, 210, 90))
    noise = Image.effect_noise((640, 480), 24).convert("RGB")
    Image.blend(image, noise, 0.15).filter(ImageFilter.GaussianBlur(1)).save(path, format="JPEG")
    return path


def make_scanned_pdf(path: Path, pages: Sequence[Sequence[str]]) -> Path:
    """A PDF whose pages are images of text, with no text layer: what a scanner writes."""
    images = [text_image(lines, size=24, width=1240).convert("L") for lines in pages]
    buf = io.BytesIO()
    images[0].save(buf, format="PDF", save_all=True, append_images=images[1:], resolution=150)  # type: ignore[attr-defined]
    path.write_bytes(buf.getvalue())
    return path
