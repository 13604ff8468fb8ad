"""Evidence spans: offsets exact into the document whatever the chunking (hand-built prompts, no
model), then with the real generator: where a copied sentence's evidence lies, the quote fallback, and
the per-head grid's shape."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rag.attribute.attribution import attribute, evidence_spans
from rag.generate.attention import FIRST_CHUNK, QUESTION
from rag.generate.decoding import Generation
from rag.generate.generator import Generator
from rag.generate.prompt import Prompt
from rag.retrieve.retriever import Retrieval
from rag.types import Source

WORDS = st.sampled_from(
    ["Etna", "erupts", "often.", "Lava", "flows", "north!", "  ", "\n", "Is", "it?", "3.5"]
)


def _prompt(document: str, cuts: list[int]) -> tuple[Prompt, list[Source]]:
    """A prompt laid out as PromptBuilder.build lays it out ("[n] title" line, then the stripped chunk),
    tokenised on spaces, with each chunk a Source slicing the document."""
    bounds = sorted({0, len(document), *cuts})
    sources, text, text_at, spans, chars, segments = [], "Sources:\n", [], [], [(0, 0)], [0]
    for i, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        chunk = document[lo:hi]
        if not chunk.strip():
            continue
        sources.append(Source(len(sources) + 1, 100 + i, 7, "doc.txt", "doc", chunk, lo, hi, 1.0))
        block_at = len(text)
        text += f"[{len(sources)}] doc\n"
        lead = len(chunk) - len(chunk.lstrip())
        text_at.append(len(text) - lead)
        text += chunk.strip()
        first = len(chars)
        for at in range(block_at, len(text), 3):  # 3-character "tokens"
            chars.append((at, min(at + 3, len(text))))
            segments.append(FIRST_CHUNK + len(sources) - 1)
        spans.append((first, len(chars)))
        text += "\n\n"
    chars.append((len(text), len(text) + 1))
    segments.append(QUESTION)
    prompt = Prompt(text, list(range(len(chars))), segments, [s.chunk_id for s in sources], spans, (0, 0),
                    (0, 0), 0, chars, text_at)
    return prompt, sources


@settings(max_examples=60, deadline=None)
@given(st.lists(WORDS, min_size=1, max_size=60).map(" ".join), st.lists(st.integers(0, 400), max_size=5),
       st.integers(0, 2**31))
def test_evidence_offsets_are_exact_into_the_document(document: str, cuts: list[int], seed: int) -> None:
    prompt, sources = _prompt(document, [c % (len(document) + 1) for c in cuts])
    if not sources:
        return
    T = 3
    masses = torch.rand(T, len(prompt.token_ids), generator=torch.Generator().manual_seed(seed))
    gen = Generation("a b c", [1, 2, 3], [(0, 1), (2, 3), (4, 5)], torch.zeros(T, 1, 1, prompt.n_segments),
                     masses, [0.0] * T, prompt, "eos", 0.0, 0.0)
    found = evidence_spans(gen, sources)
    assert found and len(found) <= 3
    assert [e.mass for e in found] == sorted((e.mass for e in found), reverse=True)
    for e in found:
        assert document[e.char_start : e.char_end] == e.text and e.text.strip()
        chunk = next(s for s in sources if s.chunk_id == e.chunk_id)
        assert chunk.char_start <= e.char_start < e.char_end <= chunk.char_end
        assert (e.document_id, e.path) == (7, "doc.txt") and 0 < e.mass <= 1


# ---- with the real generator

VOLCANO = "Etna is an active volcano in Sicily. It is 3,357 m high."
FIRST = Source(1, 10, 1, "volcanoes.txt", "Volcanoes", VOLCANO, 0, len(VOLCANO), 1.0)
COFFEE = "  Coffee came from Ethiopia. Yemen grew it first in the 15th century. Brazil grows most today."
SECOND = Source(2, 20, 2, "coffee.txt", "Coffee", COFFEE, 40, 40 + len(COFFEE), 0.9)


@pytest.mark.slow
def test_the_prompt_knows_where_each_chunk_text_sits(generator: Generator) -> None:
    prompt = generator.prompts.build("Where was coffee first grown?", [FIRST, SECOND])
    for source, at in zip([FIRST, SECOND], prompt.chunk_text_at, strict=True):
        lead = len(source.text) - len(source.text.lstrip())
        assert prompt.text[at + lead : at + len(source.text.rstrip())] == source.text.strip()


@pytest.mark.slow
def test_a_sentence_copied_from_chunk_two_has_its_evidence_there(generator: Generator) -> None:
    sources = [FIRST, SECOND]
    answer = "Yemen grew it first in the 15th century."
    gen = generator.teacher_force("Where was coffee first grown?", sources, answer)
    report = attribute(gen, sources)
    top = report.sentences[0].evidence[0]
    assert top.chunk_id == 20 and "Yemen grew it first" in top.text
    assert top.char_start >= SECOND.char_start
    L, H = generator.n_layers, generator.n_heads
    grid = report.sentences[0].heads
    assert len(grid) == L and all(len(row) == H for row in grid)
    assert all(0 <= x <= 1 for row in grid for x in row)


@pytest.mark.slow
def test_a_held_back_answer_quotes_its_evidence_verbatim(
    generator: Generator, tmp_path: Path
) -> None:
    from rag.answer.pipeline import QUOTES_LEAD, AnswerPipeline
    from rag.attribute.detector import Detector
    from rag.config import Settings
    from rag.storage.database import Database

    settings_ = Settings(home=tmp_path / "home", abstain_risk=0.0)  # hold back every draft
    pipeline = AnswerPipeline(settings_, Database(settings_), generator, Detector.baseline())
    answer = pipeline.run("Where was coffee first grown?", Retrieval([FIRST, SECOND], relevance=0.9))
    assert answer.abstained and answer.answer_kind == "quotes" and answer.draft
    assert answer.answer.startswith(QUOTES_LEAD)
    quoted = [q.split("”")[0] for q in answer.answer.split("“")[1:]]
    assert quoted and all(q in FIRST.text or q in SECOND.text for q in quoted)
