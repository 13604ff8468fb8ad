"""Property tests (hypothesis) for the loaders and the chunker.

- Whatever the bytes under whatever suffix (random, or a valid file of that type with bytes flipped,
  cut or spliced in), ``load`` returns a document or raises ``LoadError``: no other exception escapes,
  and what it returns is storable as-is (no NULs, no lone surrogates) with valid sections.
- Whatever the text and structure, chunking (as ingest does it) gives chunks that are exact slices,
  stay inside one section, respect the token limit, and together cover every token of the text.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from rag.config import Settings
from rag.parse.chunking import Chunker, ChunkerConfig, covering_sections
from rag.parse.formats import SUPPORTED_SUFFIXES, images, load, pdf
from rag.parse.formats.code import LANGUAGES
from rag.resources import resolve_model_path
from rag.types import LoadedDocument, LoadError
from tests import docfactory as df
from tests.checks import check_sections

# One suffix per parser: the 40 code suffixes all go to the same plain-text reader, and the image ones to
# the same Pillow decoding (.png, .jpg, .tiff and .heic kept for their different decoders).
_ALIASES = (set(LANGUAGES) - {".py"}) | {
    ".jpeg",
    ".tif",
    ".bmp",
    ".gif",
    ".webp",
    ".heif",
    ".htm",
    ".markdown",
}
SUFFIXES = sorted(SUPPORTED_SUFFIXES - _ALIASES)
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module", autouse=True)
def no_ocr() -> Iterator[None]:
    """Decoding damaged images and PDFs is what is fuzzed here; OCR of what decodes would cost the fast
    lane seconds an example (it is tested in tests/test_ocr.py)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(images, "recognise", lambda image: "text read by OCR")
        patch.setattr(pdf, "recognise", lambda image: "text read by OCR")
        yield


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """A valid file of every supported type, for mutation."""
    folder = tmp_path_factory.mktemp("seeds")
    text = "Heading\n\nThe Longships light, off Land's End, was first lit in 1795; café ünïcode."
    return {s: df.make_document(folder / f"seed{s}", text).read_bytes() for s in SUFFIXES}


@pytest.fixture(scope="module")
def tokenizer() -> object:
    tok = AutoTokenizer.from_pretrained(resolve_model_path(Settings().embedder))
    tok.model_max_length = 10**9  # as the Embedder sets it: whole documents are tokenised for chunking
    return tok


def _storable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in value


def load_or_reason(path: Path) -> LoadedDocument | None:
    """``load``, with LoadError (the only allowed failure) as None; anything else fails the test."""
    try:
        doc = load(path)
    except LoadError as e:
        assert str(e), "a LoadError must say why"
        return None
    assert doc.text and _storable(doc.text), repr(doc.text[:200])
    assert doc.title and _storable(doc.title), repr(doc.title)
    assert all(_storable(s.heading) for s in doc.sections if s.heading)
    check_sections(doc)
    return doc


@settings(FUZZ, max_examples=400)
@given(suffix=st.sampled_from(SUFFIXES), data=st.binary(max_size=3000))
def test_random_bytes_under_any_suffix(scratch: Path, suffix: str, data: bytes) -> None:
    path = scratch / f"random{suffix}"
    path.write_bytes(data)
    load_or_reason(path)


def _mutations(draw: st.DrawFn, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "splice", "repeat"]))
        if not out:
            break
        at = draw(st.integers(0, len(out) - 1))
        if kind == "flip":
            out[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "cut":
            del out[at:]
        elif kind == "splice":
            out[at:at] = draw(st.binary(min_size=1, max_size=64))
        else:
            out[at:at] = out[at : at + draw(st.integers(1, 200))] * draw(st.integers(2, 50))
    return bytes(out)


@settings(FUZZ, max_examples=300)
@given(suffix=st.sampled_from(SUFFIXES), data=st.data())
def test_damaged_valid_files(
    scratch: Path, seeds: dict[str, bytes], suffix: str, data: st.DataObject
) -> None:
    """Random bytes rarely get past a format's magic; damaging a real file reaches the parser."""
    path = scratch / f"damaged{suffix}"
    path.write_bytes(data.draw(st.composite(lambda draw: _mutations(draw, seeds[suffix]))()))
    load_or_reason(path)


MARKUP = st.lists(
    st.sampled_from([*"#=-`*>|:. \t\n\r", "word", "Ünï", "\u00a0", "\x00", "\ud800", "🌊", "<p>", "</h1>"]),
    max_size=80,
).map("".join)


def _token_spans(tokenizer: object, text: str) -> Iterator[tuple[int, int]]:
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)  # type: ignore[operator]
    return ((s, e) for s, e in enc["offset_mapping"] if e > s)


@settings(FUZZ, max_examples=200)
@given(
    text=MARKUP,
    suffix=st.sampled_from([".md", ".rst", ".txt", ".html"]),
    size=st.integers(16, 64),
    overlap=st.integers(0, 15),
)
@example(text="Intro before any heading.\n\n# Heading\n\nBody.", suffix=".md", size=16, overlap=0)
def test_chunks_are_exact_and_cover_every_token(
    scratch: Path, tokenizer: object, text: str, suffix: str, size: int, overlap: int
) -> None:
    path = scratch / f"markup{suffix}"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    doc = load_or_reason(path)
    if doc is None:
        return
    spans = covering_sections(doc.text, doc.sections)
    chunks = Chunker(tokenizer, ChunkerConfig(max_tokens=size, overlap_tokens=overlap)).chunk(doc.text, spans)  # type: ignore[arg-type]
    for c in chunks:
        assert doc.text[c.char_start : c.char_end] == c.text
        assert 0 < c.token_count <= size
        if spans:
            assert any(s.start <= c.char_start and c.char_end <= s.end for s in spans), c
    covered = [(c.char_start, c.char_end) for c in chunks]
    for start, end in _token_spans(tokenizer, doc.text):
        assert any(a <= start and end <= b for a, b in covered), f"token {doc.text[start:end]!r} in no chunk"
