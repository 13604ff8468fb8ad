"""Continuous batching with the real SmolLM2 (fp32): concurrent requests that join a running batch
at different steps get exactly their solo answers and masses; a client that leaves frees its slot."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import cast

import pytest
import torch

from rag.config import Settings
from rag.core import Rag
from rag.generate.batching import DecodeBatcher
from rag.generate.decoding import Generation
from rag.generate.generator import Generator
from rag.types import Answer, Source
from tests.conftest import MODELS_CACHE
from tests.factories import TOPICS, make_sources

pytestmark = pytest.mark.slow

QUESTIONS = [
    "How tall is Mount Etna?",
    "Where was coffee first cultivated?",
    "Which opening begins with 1.e4 c5?",
    "Which country produces the most coffee?",
]


def concurrently(
    batcher: DecodeBatcher, lengths: list[int], started: list[threading.Event]
) -> list[Generation]:
    """Each request starts once the previous one has streamed a token: later ones join mid-batch."""
    out: list[Generation | None] = [None] * len(QUESTIONS)

    def ask(i: int) -> None:
        if i:
            started[i - 1].wait(timeout=120)
        out[i] = batcher.generate(QUESTIONS[i], make_sources(), max_new_tokens=lengths[i],
                                  on_token=lambda _: started[i].set())

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(QUESTIONS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert all(o is not None for o in out)
    return [o for o in out if o is not None]


def test_batched_greedy_equals_solo(generator: Generator) -> None:
    lengths = [6, 20, 12, 28]  # different lengths: rows leave the batch while others go on
    solo = [generator.generate(q, make_sources(), max_new_tokens=n)
            for q, n in zip(QUESTIONS, lengths, strict=True)]
    batcher = DecodeBatcher(generator, max_batch=8)
    batched = concurrently(batcher, lengths, [threading.Event() for _ in QUESTIONS])
    assert batcher.peak_batch >= 2  # they did share steps
    for alone, together in zip(solo, batched, strict=True):
        assert together.token_ids == alone.token_ids and together.text == alone.text
        assert together.stop_reason == alone.stop_reason
        torch.testing.assert_close(together.features, alone.features, atol=1e-4, rtol=0)
        torch.testing.assert_close(together.token_masses, alone.token_masses, atol=1e-4, rtol=0)
        assert together.logprobs == pytest.approx(alone.logprobs, abs=1e-3)


class Left(Exception):
    pass


def test_a_client_that_leaves_frees_its_slot(generator: Generator) -> None:
    batcher = DecodeBatcher(generator, max_batch=1)  # one slot: the next ask needs the first one gone
    seen: list[str] = []

    def leave(piece: str) -> None:
        seen.append(piece)
        if len(seen) == 2:
            raise Left

    with pytest.raises(Left):
        batcher.generate(QUESTIONS[0], make_sources(), max_new_tokens=40, on_token=leave)
    after = batcher.generate(QUESTIONS[1], make_sources(), max_new_tokens=8)
    assert after.token_ids == generator.generate(QUESTIONS[1], make_sources(), max_new_tokens=8).token_ids


def test_a_failing_request_does_not_stop_the_others(generator: Generator) -> None:
    batcher = DecodeBatcher(generator, max_batch=4)
    with pytest.raises(AttributeError):  # its prefill fails on the scheduler thread; the caller gets it
        batcher.generate("x", cast(list[Source], [object()]))
    assert batcher.generate(QUESTIONS[2], make_sources(), max_new_tokens=5).text


def test_rag_answers_concurrent_asks_in_one_batch(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for title, text in TOPICS.items():
        (corpus / f"{title.lower()}.md").write_text(f"# {title}\n\n{text}\n", encoding="utf-8")
    settings = Settings(home=tmp_path / "home", models_cache=MODELS_CACHE, max_new_tokens=16, batch_max=4)
    rag = Rag(settings)
    rag.ingest([corpus])
    pipeline = rag.load_generator()
    answers: dict[str, Answer] = {}
    threads = [threading.Thread(target=lambda q=q: answers.__setitem__(q, rag.ask(q))) for q in QUESTIONS[:3]]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    batcher = cast(DecodeBatcher, pipeline.decoder)
    assert batcher.peak_batch >= 2
    for question, answer in answers.items():  # what a lone decode of the same prompt says
        alone = pipeline.generator.generate(question, answer.sources, max_new_tokens=16).text
        assert (answer.draft or answer.answer) == alone
