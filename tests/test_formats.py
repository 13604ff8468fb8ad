"""The formats of issue 31 (mail, e-books, OpenDocument, RTF, spreadsheets, Org, code; legacy Office and
files without an extension), each read with its text and structure, and each hostile shape of them
ending in a reason within the caps. OCR is in tests/test_ocr.py (it takes seconds)."""

from __future__ import annotations

import re
import struct
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from rag.parse.formats import SUPPORTED_SUFFIXES, containers, load, mail
from rag.parse.scan import scan
from rag.types import LoadError
from tests import docfactory as df
from tests import formatfactory as ff
from tests.checks import check_sections, section_texts

INNER_DOCX_TEXT = "The Bishop Rock light was first lit in 1858."


def _docx(tmp_path: Path) -> bytes:
    return df.make_docx(tmp_path / "inner.docx", [INNER_DOCX_TEXT]).read_bytes()


# One file of each new type: (file name, writer, (doc_type, words its text must contain)).
CASES: dict[str, tuple[Callable[[Path], Path], str, str]] = {
    "tides.xlsx": (
        lambda p: ff.make_xlsx(
            p, {"Tides": [["Port", "Height"], ["Plymouth", 4.5]], "Lights": [["Name"], ["Lizard"]]}
        ),
        "xlsx",
        "Port: Plymouth; Height: 4.5",
    ),
    "tides.xls": (
        lambda p: ff.make_xls(p, {"Tides": [["Port", "Height"], ["Falmouth", 5]]}),
        "xls",
        "Port: Falmouth",
    ),
    "tides.ods": (
        lambda p: ff.make_ods(p, {"Tides": [["Port", "Height"], ["Fowey", 3.5]]}),
        "ods",
        "Height: 3.5",
    ),
    "tides.tsv": (lambda p: df.make_csv(p, [["Port", "Note"], ["Looe", "a, b"]], "\t"), "tsv", "Note: a, b"),
    "lights.odt": (
        lambda p: ff.make_odt(p, [("h", "Devon"), ("p", "Start Point light, 1836.")], title="Lights"),
        "odt",
        "Start Point light, 1836.",
    ),
    "talk.odp": (
        lambda p: ff.make_odp(p, [("Wolf Rock", "Lit in 1869.")], {1: "Say: granite."}),
        "odp",
        "granite",
    ),
    "book.epub": (
        lambda p: ff.make_epub(
            p, [("The Reef", "Smeaton built on the reef."), ("The Tower", "It stood 120 years.")]
        ),
        "epub",
        "It stood 120 years.",
    ),
    "letter.rtf": (
        lambda p: ff.make_rtf(p, ["Café at the Lizard, 1751."], title="Letter"),
        "rtf",
        "Café at the Lizard",
    ),
    "notes.org": (lambda p: ff.make_org(p, "Notes", [("Longships", "Lit in 1795.")]), "org", "Lit in 1795."),
    "tool.py": (lambda p: df.make_text(p, "def beam():\n    return 'Pendeen'\n"), "python", "Pendeen"),
    "site.yaml": (lambda p: df.make_text(p, "light: Trevose Head\nlit: 1847\n"), "yaml", "Trevose Head"),
    "build.sh": (lambda p: df.make_text(p, "#!/bin/sh\necho Godrevy\n"), "shell", "echo Godrevy"),
    "query.sql": (lambda p: df.make_text(p, "SELECT name FROM lights;\n"), "sql", "FROM lights"),
    "app.ts": (lambda p: df.make_text(p, "const beam: string = 'Lundy';\n"), "typescript", "Lundy"),
    "rota.eml": (
        lambda p: ff.make_eml(p, "Keeper rota", "May's rota: Hartland."),
        "eml",
        "May's rota: Hartland.",
    ),
    "rota.msg": (
        lambda p: ff.make_msg(p, "Keeper rota", "June's rota: Lundy."),
        "msg",
        "June's rota: Lundy.",
    ),
    "README": (lambda p: df.make_text(p, "Sniffed as plain text: Nash Point.\n"), "txt", "Nash Point"),
    "scan-notes": (lambda p: ff.make_rtf(p, ["Sniffed as RTF: Flat Holm."]), "rtf", "Flat Holm"),
}


@pytest.mark.parametrize("name", CASES)
def test_each_type_is_read_with_its_text(tmp_path: Path, name: str) -> None:
    make, doc_type, words = CASES[name]
    doc = load(make(tmp_path / name))
    assert doc.doc_type == doc_type and words in doc.text, doc.text
    check_sections(doc)


def test_every_new_suffix_is_supported() -> None:
    wanted = ".eml .msg .epub .odt .ods .odp .rtf .xlsx .xls .tsv .org .py .js .ts .css .toml .yaml .yml .ini"
    wanted += " .sh .sql .doc .ppt .png .jpg .jpeg .tiff .bmp .heic .webp"
    assert set(wanted.split()) <= SUPPORTED_SUFFIXES


def test_a_sheet_is_a_section_named_after_it_and_each_row_names_its_columns(tmp_path: Path) -> None:
    rows = [["Port", "High water", "Height"], ["Plymouth", "06:30", 4.5], ["", "", ""], ["Fowey", None, 3]]
    path = ff.make_xlsx(tmp_path / "t.xlsx", {"May": rows, "Numbers": [[1, 2], [3, 4]]})
    doc = load(path)
    assert [s.heading for s in doc.sections] == ["May", "Numbers"]
    assert section_texts(doc) == [
        "Port: Plymouth; High water: 06:30; Height: 4.5\nPort: Fowey; Height: 3",
        "A: 1; B: 2\nA: 3; B: 4",  # a first row of numbers is data: columns go by their letters
    ]


def test_a_50000_row_sheet_is_read_quickly(tmp_path: Path) -> None:
    """2.1 M characters: in an ingest with the default caps it fails on max_file_chars, with that reason."""
    rows: list[list[object]] = [["Day", "Port", "Height"]]
    rows += [[f"day {i}", f"port {i % 40}", i % 7 + 0.5] for i in range(50_000)]
    path = ff.make_xlsx(tmp_path / "big.xlsx", {"Year": rows})
    started = time.monotonic()
    doc = load(path)
    assert time.monotonic() - started < 20
    assert doc.text.count("\n") == 49_999 and doc.text.endswith("Day: day 49999; Port: port 39; Height: 5.5")


SPARSE_XLSX = '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>'
SPARSE_XLSX += '<row r="1"><c r="A1"><v>1</v></c></row><row r="1048576"><c r="XFD1048576"><v>2</v></c></row>'
SPARSE_XLSX += "</sheetData></worksheet>"
REPEATED_ODS = (
    '<table:table table:name="T"><table:table-row table:number-rows-repeated="100000">'
    '<table:table-cell table:number-columns-repeated="1000" office:value-type="string"><text:p>x</text:p>'
    "</table:table-cell></table:table-row></table:table>"
)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda d: ff.make_xlsx(d / "sparse.xlsx", {"S": SPARSE_XLSX}), "17,179,869,184 cells"),
        (lambda d: ff.make_ods(d / "repeats.ods", {"T": REPEATED_ODS}), "100,000,000 cells"),
    ],
)
def test_a_sheet_that_would_expand_past_the_cell_cap_is_refused_before_it_is_built(
    tmp_path: Path, make: Callable[[Path], Path], reason: str
) -> None:
    """Both are a few KB; the XLSX made calamine abort the process asking for 512 GiB."""
    with pytest.raises(LoadError, match=f"{reason} .* over the 20,000,000-cell limit"):
        load(make(tmp_path))


@pytest.mark.parametrize("suffix", [".epub", ".odt", ".ods", ".xlsx", ".docx"])
def test_zip_containers_over_the_unzipped_size_cap_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    monkeypatch.setattr(containers, "MAX_UNZIPPED_BYTES", 1000)
    path = df.make_document(tmp_path / f"bomb{suffix}", "word " * 2000)
    with pytest.raises(LoadError, match=r"unzips to [\d,]+ bytes, over the 1,000-byte limit: it may be a"):
        load(path)


def test_an_odt_space_run_cannot_expand_to_a_billion_spaces(tmp_path: Path) -> None:
    raw = '<text:p>a<text:s text:c="1000000000"/>b</text:p>'
    doc = load(ff.make_odt(tmp_path / "s.odt", [("raw", raw)]))
    assert doc.text == "a" + " " * 64 + "b"


def test_odt_headings_open_sections_and_annotations_are_left_out(tmp_path: Path) -> None:
    note = (
        "<text:p>See<office:annotation><text:p>private remark</text:p></office:annotation> the log.</text:p>"
    )
    blocks = [
        ("p", "Preface."),
        ("h", "North"),
        ("p", "Flamborough."),
        ("raw", note),
        ("h", "South"),
        ("p", "Lizard."),
    ]
    doc = load(ff.make_odt(tmp_path / "l.odt", blocks, title="Coast"))
    assert doc.title == "Coast" and "private remark" not in doc.text
    assert [(s.heading, doc.text[s.start : s.end]) for s in doc.sections] == [
        ("North", "North\n\nFlamborough.\n\nSee the log."),
        ("South", "South\n\nLizard."),
    ]


def test_odp_slides_are_pages_with_their_titles_and_notes(tmp_path: Path) -> None:
    doc = load(
        ff.make_odp(tmp_path / "t.odp", [("One", "First body"), ("Two", "Second body")], {2: "A note"})
    )
    assert [(s.page, s.heading) for s in doc.sections] == [(1, "One"), (2, "Two")]
    assert section_texts(doc)[1] == "Two\n\nSecond body\n\nA note"


def test_epub_chapters_in_spine_order_without_the_navigation_page(tmp_path: Path) -> None:
    doc = load(ff.make_epub(tmp_path / "b.epub", [("One", "First."), ("Two", "Second.")], title="Reef"))
    assert doc.title == "Reef" and "Contents" not in doc.text
    assert section_texts(doc) == ["One\n\nFirst.", "Two\n\nSecond."]


def test_mail_headers_body_and_a_readable_attachment_as_a_labelled_section(tmp_path: Path) -> None:
    for name, make in (("m.eml", ff.make_eml), ("m.msg", ff.make_msg)):
        attachments = [("survey.docx", _docx(tmp_path)), ("chart.bin", b"\x00\x01\x02")]
        doc = load(make(tmp_path / name, "Survey results", "The survey is attached.", attachments))
        assert doc.title == "Survey results", name
        head = doc.text.split("\n\n", 1)[0]
        assert "Subject: Survey results" in head and "Attachments: survey.docx, chart.bin" in head, head
        assert re.search(r"^From: Harbour Master", head, re.MULTILINE) and "Date: Mon, 06 May 2024" in head
        assert "The survey is attached." in doc.text
        [section] = doc.sections
        assert (section.heading, doc.text[section.start : section.end]) == ("survey.docx", INNER_DOCX_TEXT)


def test_an_html_only_mail_is_read_for_its_visible_text(tmp_path: Path) -> None:
    data = ff.eml_bytes("Notice", "", html="<html><body><p>Fog signal <b>tested</b>.</p></body></html>")
    data = data.replace(b"Content-Type: text/plain", b"Content-Type: text/x-unused")
    doc = load(df.make_tree(tmp_path, {"n.eml": data}) / "n.eml")
    assert "Fog signal tested." in doc.text and "<b>" not in doc.text


def test_mail_nested_deeper_than_the_cap_lists_the_innermost_by_name(tmp_path: Path) -> None:
    data = ff.eml_bytes("Level 5", "Innermost body.")
    for level in range(4, 0, -1):
        data = ff.eml_bytes(f"Level {level}", f"Body {level}.", [(f"level{level + 1}.eml", data)])
    doc = load(df.make_tree(tmp_path, {"outer.eml": data}) / "outer.eml")
    assert "Body 3." in doc.text and "level5.eml" in doc.text and "Innermost body." not in doc.text
    assert mail._depth.get() == 0  # the depth counter unwinds


def _msg_claiming_a_huge_body() -> bytes:
    """A .msg whose directory says its 18-byte body is 2 GB long: what a bomb of this uncompressed
    container can do."""
    data = bytearray(ff.msg_bytes("Subject", "Body text", "A", "B"))
    entry = data.index("__substg1.0_1000001F".encode("utf-16-le"))
    struct.pack_into("<I", data, entry + 120, 0x7FFFFFF0)  # the directory entry's stream size
    return bytes(data)


def _xls_whose_chain_loops(tmp_path: Path) -> bytes:
    """A real .xls whose first sector's FAT entry points back at itself: calamine followed that chain
    until the machine ran out of memory."""
    data = bytearray(ff.make_xls(tmp_path / "loop.xls", {"S": [["a"], ["b"]]}).read_bytes())
    fat_sector = struct.unpack_from("<I", data, 76)[0]  # the header's first DIFAT entry
    struct.pack_into("<I", data, 512 + fat_sector * 512, 0)  # FAT[0] = 0
    return bytes(data)


def test_an_xls_whose_sector_chain_loops_is_refused_before_calamine_reads_it(tmp_path: Path) -> None:
    path = df.make_tree(tmp_path, {"loop.xls": _xls_whose_chain_loops(tmp_path)}) / "loop.xls"
    with pytest.raises(LoadError, match="damaged XLS file: its sector chains run in a loop"):
        load(path)


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("cut.msg", ff.msg_bytes("S", "B", "A", "B")[:1500], "damaged or truncated Outlook .msg file"),
        ("plain.msg", b"not a compound file at all", "not an Outlook .msg file"),
        ("huge.msg", _msg_claiming_a_huge_body(), "stream '__substg1.0_1000001F' is larger than the file"),
        ("noise.eml", bytes(range(256)) * 4, "not an e-mail message"),
        ("old.doc", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600), "soffice --headless --convert-to docx"),
        ("old.ppt", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600), "--convert-to pptx FILE.ppt"),
        ("bad.rtf", b"plain words, no rtf header", "not an RTF file"),
        ("bad.epub", b"PK\x05\x06" + bytes(18), "damaged EPUB file: it has no 'META-INF/container.xml'"),
        ("locked.xlsx", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600), "password-protected XLSX"),
    ],
)
def test_malformed_files_fail_with_a_reason(tmp_path: Path, name: str, data: bytes, reason: str) -> None:
    with pytest.raises(LoadError, match=re.escape(reason)):
        load(df.make_tree(tmp_path, {name: data}) / name)


def test_scan_reports_unsupported_types_and_reads_files_without_an_extension_by_content(
    tmp_path: Path,
) -> None:
    root = df.make_tree(
        tmp_path / "docs",
        {
            "a.md": "# A",
            "song.mp3": b"ID3\x04",
            "tool.exe": b"MZ",
            "LICENSE": "MIT License",
            "blob": b"\x7fELF\x00",
        },
    )
    unsupported: list[Path] = []
    found = [f.path.name for f in scan([root], unsupported=unsupported)]
    assert found == ["LICENSE", "a.md"]
    assert sorted(p.name for p in unsupported) == ["blob", "song.mp3", "tool.exe"]
    assert list(scan([root], exclude=["*.exe"], unsupported=(excluded := []))) and "tool.exe" not in {
        p.name for p in excluded
    }
