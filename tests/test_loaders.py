"""The load stage on real files of every type, the failures it must name, and the sample corpus."""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pypdf import PdfReader
from pypdf.errors import DependencyError

from rag.parse.formats import SUPPORTED_SUFFIXES, load
from rag.types import LoadedDocument, LoadError
from tests import docfactory as df
from tests import formatfactory as ff
from tests.checks import check_sections, section_texts

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "data" / "samples"


def flat(text: str) -> str:
    return " ".join(text.split())


# --- plain text and markup --------------------------------------------------------------------------


def test_txt_normalises_before_anything_else(tmp_path: Path) -> None:
    path = df.make_text(
        tmp_path / "log.txt", "Keeper's log  \r\n\r\nLit at 16:40.\t\r\n\n\n\n\nFog at dawn.\n\n"
    )
    doc = load(path)
    assert doc.text == "Keeper's log\n\nLit at 16:40.\n\nFog at dawn."
    assert (doc.title, doc.doc_type, doc.mime, doc.sections) == ("Keeper's log", "txt", "text/plain", [])


def test_txt_long_first_line_is_not_a_title(tmp_path: Path) -> None:
    doc = load(df.make_text(tmp_path / "notes.txt", "word " * 40))
    assert doc.title == "notes"


def test_txt_encodings(tmp_path: Path) -> None:
    assert load(df.make_utf16(tmp_path / "u16.txt", "Phare de Cordouan\nVersailles de la mer")).text == (
        "Phare de Cordouan\nVersailles de la mer"
    )
    bom = tmp_path / "bom.txt"
    bom.write_bytes("\ufeffKõpu tuletorn".encode())
    assert load(bom).text == "Kõpu tuletorn"


MARKDOWN = """\
---
title: "Lights of the North"
tags: [scotland]
---

A preamble that belongs to no heading.

# Bell Rock

Built on a reef off Arbroath.

```python
# not a heading: inside a code fence
x = 1
```

Skerryvore
----------

Tallest in Scotland.

## Trailing hashes ##
- a list item
---

#hashtag is not a heading
"""


def test_markdown_sections_and_front_matter(tmp_path: Path) -> None:
    doc = load(df.make_text(tmp_path / "north.md", MARKDOWN))
    check_sections(doc)
    assert doc.title == "Lights of the North"
    assert not doc.text.startswith("---"), "front matter is not content"
    assert [s.heading for s in doc.sections] == ["Bell Rock", "Skerryvore", "Trailing hashes"]
    assert section_texts(doc) == [
        "# Bell Rock\n\nBuilt on a reef off Arbroath.\n\n```python\n# not a heading: inside a code fence\n"
        "x = 1\n```",
        "Skerryvore\n----------\n\nTallest in Scotland.",
        "## Trailing hashes ##\n- a list item\n---\n\n#hashtag is not a heading",
    ]
    assert doc.text.startswith("A preamble"), "text before the first heading is kept, in no section"


@pytest.mark.parametrize("suffix", [".md", ".markdown", ".mdx", ".MD"])
def test_markdown_suffixes(tmp_path: Path, suffix: str) -> None:
    doc = load(df.make_text(tmp_path / f"x{suffix}", "# Fog\n\nHorn(2) 30s\n"))
    assert (doc.doc_type, doc.mime, doc.title) == ("md", "text/markdown", "Fog")


RST = """\
=================
 Fog and Signals
=================

Intro text.

Bells
=====

Rung by clockwork.

::

    literal block
    -------------

Sirens
------

Louder.

----

After a transition.
"""


def test_rst_titles(tmp_path: Path) -> None:
    doc = load(df.make_text(tmp_path / "fog.rst", RST))
    check_sections(doc)
    assert (doc.title, doc.doc_type, doc.mime) == ("Fog and Signals", "rst", "text/x-rst")
    assert [s.heading for s in doc.sections] == ["Fog and Signals", "Bells", "Sirens"]
    assert section_texts(doc)[0].startswith("=================\n Fog and Signals")
    assert "literal block\n    -------------" in section_texts(doc)[1]
    assert section_texts(doc)[2].endswith("After a transition.")


# --- HTML -------------------------------------------------------------------------------------------

HTML_BODY = """
<header><p>SITE BANNER</p></header>
<nav><a href="/">NAV LINK</a></nav>
<aside>ASIDE TEXT</aside>
<main><article>
  <header><h1>Bell  Rock
     Lighthouse</h1></header>
  <p>First lit in <b>1811</b>, off
     Arbroath.<br>Engineer: Robert Stevenson.</p>
  <!-- an HTML comment -->
  <script>var SCRIPT_TEXT = 1;</script><style>.STYLE_TEXT {}</style>
  <noscript>NOSCRIPT TEXT</noscript><template><p>TEMPLATE TEXT</p></template>
  <h2>Construction</h2>
  <ul><li>1807: work starts</li><li>1810: tower finished</li></ul>
  <table><tr><th>Year</th><th>Event</th></tr><tr><td>1811</td><td>first lit</td></tr></table>
  <h4>A minor heading</h4>
  <pre>  keep
    this   layout</pre>
  <h3>Keepers &amp; families</h3>
  <p>Three keepers at a time.</p>
  <footer>ARTICLE FOOTER</footer>
</article></main>
<footer>SITE FOOTER</footer>
"""


def test_html_keeps_content_drops_furniture(tmp_path: Path) -> None:
    doc = load(
        df.make_html(tmp_path / "bell.html", HTML_BODY, title="Bell Rock | Lights", head="<style>x{}</style>")
    )
    check_sections(doc)
    assert (doc.title, doc.doc_type, doc.mime) == ("Bell Rock | Lights", "html", "text/html")
    for furniture in [
        "SITE BANNER",
        "NAV LINK",
        "ASIDE TEXT",
        "SCRIPT_TEXT",
        "STYLE_TEXT",
        "NOSCRIPT",
        "TEMPLATE",
    ]:
        assert furniture not in doc.text
    assert "SITE FOOTER" not in doc.text and "an HTML comment" not in doc.text
    assert "ARTICLE FOOTER" in doc.text, "a footer inside the article is content"
    assert doc.text.startswith("Bell Rock Lighthouse\n\nFirst lit in 1811, off Arbroath.\nEngineer: Robert")
    assert "1807: work starts\n\n1810: tower finished" in doc.text
    assert "Year | Event\n1811 | first lit" in doc.text
    assert "  keep\n    this   layout" in doc.text
    assert "Keepers & families" in doc.text
    assert [s.heading for s in doc.sections] == ["Bell Rock Lighthouse", "Construction", "Keepers & families"]
    assert section_texts(doc)[1].startswith("Construction\n\n1807")
    assert "A minor heading" in section_texts(doc)[1], "h4 does not open a section"


def test_html_title_falls_back_to_h1(tmp_path: Path) -> None:
    doc = load(df.make_text(tmp_path / "x.htm", "<h1>Fastnet</h1><p>Ireland's Teardrop</p>"))
    assert (doc.title, doc.text) == ("Fastnet", "Fastnet\n\nIreland's Teardrop")


# --- PDF, DOCX, PPTX ---------------------------------------------------------------------------------


def test_pdf_pages_become_sections(tmp_path: Path) -> None:
    path = df.make_pdf(
        tmp_path / "keepers.pdf", ["Page one: the daily round.", "", "Page three (Flannan Isles)."], "Keepers"
    )
    doc = load(path)
    check_sections(doc)
    assert (doc.title, doc.doc_type, doc.mime) == ("Keepers", "pdf", "application/pdf")
    assert doc.text == "Page one: the daily round.\n\nPage three (Flannan Isles)."
    assert [(s.page, doc.text[s.start : s.end]) for s in doc.sections] == [
        (1, "Page one: the daily round."),
        (3, "Page three (Flannan Isles)."),
    ], "a page without text has no section, and page numbers stay true"


def test_pdf_without_title_uses_file_name(tmp_path: Path) -> None:
    assert load(df.make_pdf(tmp_path / "beacon-list.pdf", ["text"])).title == "beacon-list"


def test_pdf_writer_wraps_long_lines_and_refuses_overflow(tmp_path: Path) -> None:
    long = "lighthouse " * 100
    doc = load(df.make_pdf(tmp_path / "long.pdf", [long]))
    assert flat(doc.text) == long.strip()
    with pytest.raises(ValueError, match="at most"):
        df.pdf_bytes(["line\n" * 100])


def test_pdf_encrypted_with_empty_user_password_opens(tmp_path: Path) -> None:
    path = df.make_encrypted_pdf(
        tmp_path / "restricted.pdf", ["Owner-restricted but readable."], user_password=""
    )
    assert PdfReader(path).is_encrypted
    assert load(path).text == "Owner-restricted but readable."


def test_docx_headings_tables_and_title(tmp_path: Path) -> None:
    path = df.make_docx(
        tmp_path / "auto.docx",
        [
            "Preamble.",
            "# The sun valve",
            "Dalén, 1912.",
            [["Year", "Event"], ["1968", "LAMP"]],
            "## Boston",
            "1716.",
        ],
        title="Automation",
    )
    doc = load(path)
    check_sections(doc)
    assert doc.doc_type == "docx" and doc.mime.endswith("wordprocessingml.document")
    assert doc.title == "Automation"
    assert (
        doc.text
        == "Preamble.\n\nThe sun valve\n\nDalén, 1912.\n\nYear | Event\n1968 | LAMP\n\nBoston\n\n1716."
    )
    assert [(s.heading, doc.text[s.start : s.end]) for s in doc.sections] == [
        ("The sun valve", "The sun valve\n\nDalén, 1912.\n\nYear | Event\n1968 | LAMP"),
        ("Boston", "Boston\n\n1716."),
    ]


def test_docx_title_style_is_the_fallback_title(tmp_path: Path) -> None:
    doc = load(df.make_docx(tmp_path / "t.docx", ["#! Keepers' Handbook", "Trim the wick."]))
    assert doc.title == "Keepers' Handbook"
    assert doc.sections[0].heading == "Keepers' Handbook"


def test_pptx_slides_become_pages(tmp_path: Path) -> None:
    path = df.make_pptx(
        tmp_path / "talk.pptx",
        [
            ("Fresnel lenses", "Orders one to six\nBullseye panels"),
            ("", "A slide without a title"),
            ("Fog", "Diaphone"),
        ],
        notes={3: "Mention the grunt."},
    )
    doc = load(path)
    check_sections(doc)
    assert doc.doc_type == "pptx" and doc.mime.endswith("presentationml.presentation")
    assert doc.title == "Fresnel lenses"
    assert [(s.page, s.heading, doc.text[s.start : s.end]) for s in doc.sections] == [
        (1, "Fresnel lenses", "Fresnel lenses\n\nOrders one to six\nBullseye panels"),
        (2, None, "A slide without a title"),
        (3, "Fog", "Fog\n\nDiaphone\n\nMention the grunt."),
    ]


# --- CSV and JSON ------------------------------------------------------------------------------------


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_csv_rows_as_header_value_lines(tmp_path: Path, delimiter: str) -> None:
    rows = [
        ["name", "location", "first lit"],
        ["Bell Rock", "Arbroath, Scotland", "1811"],
        ["Jeddah Light", "", "1990", "133 m"],
        ["", "", ""],
    ]
    doc = load(df.make_csv(tmp_path / "lights.csv", rows, delimiter=delimiter))
    assert (doc.doc_type, doc.mime, doc.title, doc.sections) == ("csv", "text/csv", "lights", [])
    assert doc.text == (
        "name: Bell Rock; location: Arbroath, Scotland; first lit: 1811\n"
        "name: Jeddah Light; first lit: 1990; column 4: 133 m"
    )


def test_json_flattened_with_paths(tmp_path: Path) -> None:
    value = {
        "title": "Glossary",
        "terms": [{"term": "knot", "si": None}, {"term": "racon", "radar": True}],
        "n": 2,
    }
    doc = load(df.make_json(tmp_path / "g.json", value))
    assert (doc.doc_type, doc.mime, doc.title) == ("json", "application/json", "Glossary")
    assert doc.text == (
        "title: Glossary\nterms[0].term: knot\nterms[0].si: null\n"
        "terms[1].term: racon\nterms[1].radar: true\nn: 2"
    )


def test_jsonl_records_separated(tmp_path: Path) -> None:
    doc = load(df.make_jsonl(tmp_path / "q.jsonl", [{"q": "Who?", "a": ["Grace"]}, "plain", 3]))
    assert (doc.doc_type, doc.mime, doc.title) == ("json", "application/x-ndjson", "q")
    assert doc.text == "q: Who?\na[0]: Grace\n\nplain\n\n3"


# --- failures: each with a reason a user can act on -------------------------------------------------

OLE_HEADER = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # how Office stores password-protected files


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


FAILURES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "unknown type": (lambda d: df.make_text(d / "slides.key", "x"), "unsupported file type '.key'"),
    "no extension, unknown content": (
        lambda d: _write(d / "firmware", b"\x7fELF" + bytes(range(256))),
        "unsupported file type '(no extension)': its content is not a type sightline reads",
    ),
    "zero bytes": (lambda d: df.make_empty(d / "empty.pdf"), "empty file"),
    "only whitespace": (lambda d: df.make_text(d / "blank.md", " \n\t\n\r\n"), "empty file"),
    "header-only csv": (lambda d: df.make_csv(d / "h.csv", [["a", "b"]]), "empty file"),
    "binary under .txt": (lambda d: df.make_binary_with_txt_suffix(d / "image.txt"), "binary content"),
    "NUL in valid utf-8": (lambda d: df.make_text(d / "nul.md", "a\x00b"), "binary content"),
    "latin-1 bytes": (lambda d: df.make_invalid_utf8(d / "latin1.txt"), "not valid UTF-8 text"),
    "encrypted pdf": (lambda d: df.make_encrypted_pdf(d / "locked.pdf", ["secret"]), "needs a password"),
    "truncated pdf": (lambda d: df.make_corrupt_pdf(d / "cut.pdf"), "damaged or truncated PDF"),
    "pdf without text": (lambda d: df.make_pdf(d / "scan.pdf", ["", ""]), "no extractable text"),
    "truncated docx": (lambda d: df.make_corrupt_office(d / "cut.docx"), "damaged or truncated DOCX"),
    "truncated pptx": (lambda d: df.make_corrupt_office(d / "cut.pptx"), "damaged or truncated PPTX"),
    "docx that is OLE": (lambda d: _write(d / "locked.docx", OLE_HEADER + bytes(500)), "password-protected"),
    "invalid json": (lambda d: df.make_text(d / "bad.json", '{\n  "a": \n}'), "invalid JSON at line 3"),
    "invalid jsonl line": (
        lambda d: df.make_text(d / "bad.jsonl", '{"a": 1}\n\n{"b": }\n'),
        "invalid JSON at line 3",
    ),
    "folder named like a file": (lambda d: _mkdir(d / "folder.md"), "cannot read file"),
}


@pytest.mark.parametrize("case", FAILURES)
def test_load_errors_say_why(tmp_path: Path, case: str) -> None:
    make, reason = FAILURES[case]
    with pytest.raises(LoadError, match=re.escape(reason)):
        load(make(tmp_path))


def test_pdf_needing_missing_crypto_library_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """AES PDFs need the optional 'cryptography' package; without it the reason must say so."""
    path = df.make_encrypted_pdf(tmp_path / "aes.pdf", ["x"], user_password="")

    def refuse(self: PdfReader, password: str) -> None:
        raise DependencyError("cryptography>=3.1 is required for AES algorithm")

    monkeypatch.setattr(PdfReader, "decrypt", refuse)
    with pytest.raises(LoadError, match="cannot decrypt: cryptography"):
        load(path)


@pytest.mark.parametrize(
    "suffix",
    [  # images go through OCR, a second or more each: they run in the slow lane
        pytest.param(s, marks=pytest.mark.slow) if s in ff.IMAGE_SUFFIXES else s
        for s in sorted(SUPPORTED_SUFFIXES - ff.UNWRITABLE)
    ],
)
def test_docfactory_makes_a_loadable_document_of_every_type(tmp_path: Path, suffix: str) -> None:
    doc = load(df.make_document(tmp_path / f"doc{suffix}", "Lindesnes, 1655"))
    assert "Lindesnes, 1655" in doc.text


def test_supported_suffixes_are_lower_case_with_dot() -> None:
    assert {".txt", ".md", ".rst", ".html", ".pdf", ".docx", ".pptx", ".csv", ".json"} <= SUPPORTED_SUFFIXES
    assert all(s.startswith(".") and s == s.lower() for s in SUPPORTED_SUFFIXES)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    text=st.text(alphabet="#=-~`:a b\n\r\t.", max_size=300), suffix=st.sampled_from([".md", ".rst", ".txt"])
)
@example(text=" :\n=", suffix=".md")  # an indented setext heading: its section began at the space
def test_sections_valid_for_any_markup(tmp_path: Path, text: str, suffix: str) -> None:
    path = df.make_text(tmp_path / f"any{suffix}", text)
    try:
        doc = load(path)
    except LoadError as e:
        assert "empty file" in str(e)
        return
    check_sections(doc)
    assert doc.text == doc.text.strip("\n") and "\n\n\n" not in doc.text and "\r" not in doc.text


# --- the sample corpus -------------------------------------------------------------------------------


def sample_docs() -> dict[str, LoadedDocument]:
    return {p.name: load(p) for p in sorted(SAMPLES.iterdir())}


def test_every_sample_loads_with_valid_sections() -> None:
    docs = sample_docs()
    assert {d.doc_type for d in docs.values()} >= {"md", "html", "txt", "pdf", "docx", "rst", "csv", "json"}
    for name, doc in docs.items():
        check_sections(doc)
        assert 150 <= len(doc.text.split()) <= 1500, name
    assert (
        "LENS-SHOP-42" not in docs["fresnel-lens.html"].text
        and "Gift shop" not in docs["fresnel-lens.html"].text
    )
    assert [s.page for s in docs["keepers-lives.pdf"].sections] == [1, 2, 3]


def test_each_probe_answer_is_in_exactly_one_sample() -> None:
    docs = {name: flat(doc.text) for name, doc in sample_docs().items()}
    probe_file = REPO / "tests" / "data" / "probes.jsonl"
    probes = [json.loads(line) for line in probe_file.read_text().splitlines()]
    assert len(probes) >= 15
    for probe in probes:
        assert [name for name, text in docs.items() if probe["expect"] in text] == [probe["file"]], probe


def test_pdf_probes_are_on_their_page() -> None:
    pdf = load(SAMPLES / "keepers-lives.pdf")
    pages = {s.page: flat(pdf.text[s.start : s.end]) for s in pdf.sections}
    for line in (REPO / "tests" / "data" / "probes.jsonl").read_text().splitlines():
        probe = json.loads(line)
        if "page" in probe:
            assert probe["expect"] in pages[probe["page"]], probe


def test_committed_binary_samples_match_the_build_script(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("build_samples", REPO / "scripts" / "build_samples.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for built in module.build(tmp_path):
        assert built.read_bytes() == (SAMPLES / built.name).read_bytes(), (
            f"rerun scripts/build_samples.py: {built.name}"
        )
