"""Chunking with the packaged embedder's tokenizer: exact offsets, token limits, boundaries, overlap."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from rag.config import Settings
from rag.parse.chunking import Chunker, ChunkerConfig
from rag.resources import resolve_model_path
from rag.types import Section


@pytest.fixture(scope="module")
def tokenizer():  # type: ignore[no-untyped-def]
    """The embedder's tokenizer alone (the fast lane loads no model), set up as the Embedder sets it."""
    tok = AutoTokenizer.from_pretrained(resolve_model_path(Settings().embedder))
    tok.model_max_length = 10**9
    return tok


def count_tokens(tokenizer, text: str) -> int:  # type: ignore[no-untyped-def]
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


PARAGRAPHS = [
    "The Bell Rock Lighthouse stands on a reef off the coast of Angus. It was built between 1807 and 1810.",
    "Its light was first shown on 1 February 1811, and it is the oldest surviving sea-washed lighthouse.",
    "Robert Stevenson designed it; John Rennie advised. The tower is 35 metres tall.",
] * 6


def test_offsets_exact_and_within_token_limit(tokenizer) -> None:  # type: ignore[no-untyped-def]
    text = "\n\n".join(PARAGRAPHS)
    chunks = Chunker(tokenizer, ChunkerConfig(max_tokens=60, overlap_tokens=10)).chunk(text)
    assert len(chunks) > 3
    for c in chunks:
        assert text[c.char_start : c.char_end] == c.text
        assert c.token_count <= 60
        assert count_tokens(tokenizer, c.text) <= 60
    assert chunks[0].char_start == 0 and chunks[-1].char_end == len(text)


def test_cuts_prefer_paragraphs_then_sentences(tokenizer) -> None:  # type: ignore[no-untyped-def]
    text = "\n\n".join(PARAGRAPHS)
    chunks = Chunker(tokenizer, ChunkerConfig(max_tokens=60, overlap_tokens=0)).chunk(text)
    for c in chunks[:-1]:
        assert c.text.endswith((".", "!", "?")), c.text[-30:]


def test_overlap_repeats_the_tail_of_the_previous_chunk(tokenizer) -> None:  # type: ignore[no-untyped-def]
    text = " ".join(PARAGRAPHS)  # one long paragraph: only sentence boundaries
    chunks = Chunker(tokenizer, ChunkerConfig(max_tokens=50, overlap_tokens=20)).chunk(text)
    for a, b in itertools.pairwise(chunks):
        assert b.char_start < a.char_end, "consecutive chunks overlap"
        assert b.char_start > a.char_start, "chunking advances"


def test_chunks_never_cross_sections_and_keep_page_and_heading(tokenizer) -> None:  # type: ignore[no-untyped-def]
    page1, page2 = "First page text. " * 20, "Second page text. " * 20
    text = page1 + "\n\n" + page2
    sections = [
        Section(0, len(page1), page=1, heading="One"),
        Section(len(page1) + 2, len(text), page=2, heading="Two"),
    ]
    chunks = Chunker(tokenizer, ChunkerConfig(max_tokens=40, overlap_tokens=5)).chunk(text, sections)
    for c in chunks:
        section = next(s for s in sections if s.start <= c.char_start < s.end)
        assert c.char_end <= section.end
        assert (c.page, c.heading) == (section.page, section.heading)
    assert {c.page for c in chunks} == {1, 2}


def test_a_single_giant_word_is_still_cut(tokenizer) -> None:  # type: ignore[no-untyped-def]
    text = "x" * 5000
    chunks = Chunker(tokenizer, ChunkerConfig(max_tokens=64, overlap_tokens=8)).chunk(text)
    assert chunks and all(c.token_count <= 64 for c in chunks)
    assert "".join(c.text for c in chunks).count("x") >= 5000


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(min_size=0, max_size=800), size=st.integers(16, 80), overlap=st.integers(0, 15))
def test_offsets_exact_for_any_text(tokenizer, text: str, size: int, overlap: int) -> None:  # type: ignore[no-untyped-def]
    chunks = Chunker(tokenizer, ChunkerConfig(max_tokens=size, overlap_tokens=overlap)).chunk(text)
    for c in chunks:
        assert text[c.char_start : c.char_end] == c.text
        assert 0 < c.token_count <= size
    starts = [c.char_start for c in chunks]
    assert starts == sorted(set(starts))
