"""Guided decoding (rag/answer/guided.py) with the real packaged model (SmolLM2-135M, fp32): one candidate is
greedy decoding exactly; with several, the answer's attention and log-probabilities are those of the
tokens it kept, so attribution and teacher forcing read it as they read a greedy answer."""

from __future__ import annotations

import pytest
import torch

from rag.answer.guided import guided_generate
from rag.attribute.attribution import attribute
from rag.attribute.detector import Detector, pool
from rag.generate.generator import Generator
from tests.factories import make_sources

pytestmark = pytest.mark.slow

QUESTION = "Where was coffee first cultivated?"


def test_one_candidate_is_greedy_decoding(generator: Generator) -> None:
    sources = make_sources()
    greedy = generator.generate(QUESTION, sources)
    pieces: list[str] = []
    guided = guided_generate(generator, Detector.baseline(), QUESTION, sources, candidates=1, step_tokens=3,
                             on_token=pieces.append)
    assert guided.token_ids == greedy.token_ids and guided.text == greedy.text
    assert guided.offsets == greedy.offsets and guided.logprobs == greedy.logprobs
    assert guided.stop_reason == greedy.stop_reason
    assert torch.equal(guided.features, greedy.features)
    assert torch.equal(guided.token_masses, greedy.token_masses)
    assert "".join(pieces) == guided.text


def test_the_kept_path_carries_its_own_attention(generator: Generator) -> None:
    sources = make_sources()
    detector = Detector.baseline()
    greedy = generator.generate(QUESTION, sources)
    pieces: list[str] = []
    guided = guided_generate(generator, detector, QUESTION, sources, candidates=3, step_tokens=4, seed=1,
                             on_token=pieces.append)
    again = guided_generate(generator, detector, QUESTION, sources, candidates=3, step_tokens=4, seed=1)
    assert again.token_ids == guided.token_ids  # seeded: the same request, the same answer
    assert guided.token_ids != greedy.token_ids  # a sampled candidate was kept somewhere
    T = len(guided.token_ids)
    assert guided.features.shape == (T, generator.n_layers, generator.n_heads, guided.prompt.n_segments)
    assert guided.token_masses.shape == (T, len(guided.prompt.token_ids)) and len(guided.logprobs) == T
    assert "".join(pieces) == guided.text
    # the same tokens teacher-forced give the same attention and log-probabilities: nothing of a
    # dropped candidate is left in them
    forced = generator.teacher_force(QUESTION, sources, guided.text)
    assert forced.token_ids == guided.token_ids
    torch.testing.assert_close(forced.features, guided.features, atol=1e-4, rtol=0)
    logprobs = torch.tensor(forced.logprobs), torch.tensor(guided.logprobs)
    torch.testing.assert_close(*logprobs, atol=1e-4, rtol=0)
    attribution = attribute(guided, sources, detector)
    assert sum(s.attention_mass or 0.0 for s in attribution.sources) == pytest.approx(1.0, abs=1e-3)
    assert attribution.hallucination.risk == pytest.approx(detector.risk(pool(guided)))


def test_bad_candidate_counts_are_refused(generator: Generator) -> None:
    with pytest.raises(ValueError, match="candidates"):
        guided_generate(generator, Detector.baseline(), QUESTION, make_sources(), candidates=0)
