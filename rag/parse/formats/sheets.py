"""Spreadsheets (.xlsx .xlsm .xls .xlsb .ods), read by python-calamine (Rust: one reader for all of them,
values typed, no formula evaluation): a section per sheet, headed by the sheet's name, so a sheet's
evidence names its sheet. Rows are written as CSV's are (`row_line`), so every chunk carries the
column names."""

from __future__ import annotations

import datetime as dt
import io
import re
import zipfile
from collections.abc import Iterable
from typing import Any

from rag.parse.formats.common import OLE_MAGIC, Builder, Parsed, malformed, one_line
from rag.parse.formats.containers import open_zip
from rag.parse.formats.data import row_line
from rag.types import LoadError

_ZIP_MAGIC = b"PK\x03\x04"
# calamine holds a sheet as a dense grid of 32-byte cells from its first used cell to its last: a 2 KB
# XLSX with values in A1 and XFD1048576 asks for 512 GiB and aborts the process. 20 M cells is 640 MB,
# 100 times a 50,000-row sheet of 20 columns. (An .xls sheet is at most 65,536 x 256 cells.)
MAX_CELLS = 20_000_000
_XLSX_CELL_REF = re.compile(rb'\sr="([A-Z]{1,3})([0-9]{1,7})"')
_BLOCK = 1 << 20
_ODF_TABLE = "{urn:oasis:names:tc:opendocument:xmlns:table:1.0}"


def parse_sheets(data: bytes, kind: str) -> Parsed:
    """Every visible and hidden worksheet (chart sheets have no cells) in workbook order. The first
    non-empty row is the header when all its cells are text; otherwise columns are named by letter."""
    if data.startswith(_ZIP_MAGIC):
        with open_zip(data, kind) as archive:
            cells = _ods_extent(archive, kind) if kind == "ODS" else _xlsx_extent(archive, kind)
        if cells > MAX_CELLS:
            raise LoadError(
                f"{kind} sheet spans {cells:,} cells from its first used cell to its last, over the "
                f"{MAX_CELLS:,}-cell limit: it may be a decompression bomb"
            )
    elif kind != "XLS" and data.startswith(OLE_MAGIC):
        raise LoadError(f"password-protected {kind} file: save it without a password to index it")
    elif data.startswith(OLE_MAGIC):
        _check_ole_chains(data, kind)
    from python_calamine import CalamineWorkbook, PasswordError

    builder = Builder()
    try:
        with malformed(kind):
            workbook = CalamineWorkbook.from_filelike(io.BytesIO(data))
            for name in workbook.sheet_names:
                rows = workbook.get_sheet_by_name(name).iter_rows()
                builder.section(heading=one_line(name) or None)
                builder.add("\n".join(_lines(rows)))
    except PasswordError as e:
        raise LoadError(f"password-protected {kind} file: save it without a password to index it") from e
    except BaseException as e:  # pyo3's PanicException (a Rust panic on a malformed file) is no Exception
        if type(e).__name__ != "PanicException":
            raise
        raise LoadError(f"damaged or truncated {kind} file ({e})") from e
    text, sections = builder.build()
    return text, None, sections


def _lines(rows: Iterable[list[Any]]) -> Iterable[str]:
    header: list[str] | None = None
    for row in rows:
        cells = [_cell(value) for value in row]
        if not any(c.strip() for c in cells):
            continue
        if header is None:
            if all(isinstance(v, str) for v in row if _cell(v).strip()):
                header = [one_line(c) for c in cells]
                continue
            header = [_column_letters(i) for i in range(len(cells))]
        if line := row_line(header, cells):
            yield line


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dt.datetime):
        return value.date().isoformat() if value.time() == dt.time() else value.isoformat(" ", "minutes")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return "" if value is None else str(value)


def _column_letters(index: int) -> str:
    """0 -> A, 25 -> Z, 26 -> AA: what a spreadsheet calls the column."""
    name = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        name = chr(ord("A") + rest) + name
    return name


def _check_ole_chains(data: bytes, kind: str) -> None:
    """Refuse an OLE file (.xls) whose sector chains loop: calamine follows a chain to its end without a
    bound, and on a damaged .xls whose chain came back on itself it grew one list until the machine ran
    out of memory (24 GB, where no address-space cap stood in its way). olefile reads the tables."""
    import olefile

    with malformed(kind):
        ole = olefile.OleFileIO(data)
        try:
            ole.loadminifat()
            tables = [("sector", list(ole.fat)), ("mini-sector", list(ole.minifat))]
        finally:
            ole.close()
    for name, table in tables:
        if _has_cycle(table):
            raise LoadError(f"damaged {kind} file: its {name} chains run in a loop")


def _has_cycle(table: list[int]) -> bool:
    """Whether following ``table[i]`` from some sector comes back to a sector already on that path
    (values past the table's end end a chain: ENDOFCHAIN, FREESECT and the like)."""
    state = bytearray(len(table))  # 0: not seen, 1: on the path being followed, 2: ends
    for start in range(len(table)):
        path, sector = [], start
        while 0 <= sector < len(table) and state[sector] == 0:
            state[sector] = 1
            path.append(sector)
            sector = table[sector]
        if 0 <= sector < len(table) and state[sector] == 1:
            return True
        for visited in path:
            state[visited] = 2
    return False


def _xlsx_extent(archive: zipfile.ZipFile, kind: str) -> int:
    """The largest sheet's grid (rows x columns between its first and last cell reference), found by
    scanning each worksheet's XML for ``r="B12"`` without parsing it."""
    largest = 0
    for info in archive.infolist():
        if not (info.filename.startswith("xl/worksheets/") and info.filename.endswith(".xml")):
            continue
        rows, cols = [1 << 30, 0], [1 << 30, 0]
        tail = b""
        with malformed(kind), archive.open(info) as member:
            while block := member.read(_BLOCK):
                for match in _XLSX_CELL_REF.finditer(tail + block):
                    row, col = int(match[2]), _column_number(match[1])
                    rows[0], rows[1] = min(rows[0], row), max(rows[1], row)
                    cols[0], cols[1] = min(cols[0], col), max(cols[1], col)
                tail = block[-24:]  # a reference cut by the block boundary is seen whole next time
        if rows[1]:
            largest = max(largest, (rows[1] - rows[0] + 1) * (cols[1] - cols[0] + 1))
    return largest


def _column_number(letters: bytes) -> int:
    number = 0
    for letter in letters:
        number = number * 26 + letter - 64
    return number


def _ods_extent(archive: zipfile.ZipFile, kind: str) -> int:
    """The largest table's grid once ``number-rows-repeated``/``number-columns-repeated`` are expanded,
    up to its last row and column holding a value (empty repeats, which LibreOffice writes to the
    sheet's end, are not expanded); streamed, so a bomb is measured without being built."""
    from lxml import etree

    largest = row_index = last_row = width = 0
    with malformed(kind), archive.open("content.xml") as member:
        for event, element in etree.iterparse(member, events=("start", "end"), huge_tree=True):
            tag = element.tag
            if tag == f"{_ODF_TABLE}table" and event == "start":
                row_index = last_row = width = 0
            elif tag == f"{_ODF_TABLE}table-row" and event == "end":
                column = used = 0
                for cell in element:
                    column += _repeat(cell, "number-columns-repeated")
                    if len(cell) or cell.get("{urn:oasis:names:tc:opendocument:xmlns:office:1.0}value-type"):
                        used = column
                repeat = _repeat(element, "number-rows-repeated")
                row_index += repeat
                if used:
                    last_row, width = row_index, max(width, used)
                    largest = max(largest, last_row * width)
                element.clear()
    return largest


def _repeat(element: Any, attribute: str) -> int:
    try:
        return max(1, int(element.get(f"{_ODF_TABLE}{attribute}", "1")))
    except ValueError:
        return 1
