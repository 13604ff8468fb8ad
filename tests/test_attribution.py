"""Attribution and the risk detector: sentence splitting and detector I/O alone, then shares, support
and risk on answers from the real packaged model."""

from __future__ import annotations

import copy
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from rag.attribute.attribution import attribute, lookback_ratios, pooled_lookback
from rag.attribute.detector import BASELINE_METHOD, Detector, pool
from rag.generate.attention import FIRST_CHUNK, GENERATED
from rag.generate.decoding import Decoding, Generation
from rag.generate.generator import Generator, check_attention_window
from rag.generate.prompt import Prompt
from rag.text import split_sentences
from tests.factories import make_sources

# ---- sentences (no model)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Etna is 3,357 m high [1]. It is in Sicily [1][2].",
            ["Etna is 3,357 m high [1].", "It is in Sicily [1][2]."],
        ),
        (
            "Brazil grows most coffee. [2] Yemen grew it first.",
            ["Brazil grows most coffee. [2]", "Yemen grew it first."],
        ),
        (
            "Dr. Smith, e.g. a chemist, left. Why? No one knows!",
            ["Dr. Smith, e.g. a chemist, left.", "Why?", "No one knows!"],
        ),
        ("Two items:\n1. coffee\n2. tea", ["Two items:", "1. coffee", "2. tea"]),
        ("It costs 3.5 dollars. J. R. Tolkien wrote it", ["It costs 3.5 dollars.", "J. R. Tolkien wrote it"]),
        ("  I don't know.  ", ["I don't know."]),
        ("", []),
    ],
)
def test_sentences_slice_the_text_exactly_and_keep_their_citations(text: str, expected: list[str]) -> None:
    spans = split_sentences(text)
    assert [text[s:e] for s, e in spans] == expected
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))


# ---- detector and features (no model)


def _generation(masses: torch.Tensor, logprobs: list[float], n_context: int) -> Generation:
    """A hand-built generation: a prompt of one sink token and n_context chunk tokens."""
    segments = [0] + [FIRST_CHUNK] * n_context
    prompt = Prompt("x", list(range(len(segments))), segments, [1], [(1, len(segments))], (0, 0), (0, 0), 0,
                    [(i, i + 1) for i in range(len(segments))], [1])
    T = masses.shape[0]
    return Generation("a" * T, list(range(T)), [(i, i + 1) for i in range(T)], masses,
                      torch.zeros(T, len(segments)), logprobs, prompt, "eos", 0.0, 0.0)


def test_a_sliding_window_shorter_than_a_prompt_is_refused() -> None:
    """A layer that attends through a window drops the keys before it: it could not say where a
    token looked in a longer prompt (Gemma 3 270M's 512-token window failed on the shapes)."""
    from transformers import Gemma3TextConfig, Qwen2Config

    check_attention_window(Qwen2Config(), "full", 10_000)
    check_attention_window(Gemma3TextConfig(sliding_window=4096), "wide window", 3_000)
    with pytest.raises(ValueError, match=r"512-token sliding window in 22 of 26 layers.*3000 tokens"):
        check_attention_window(Gemma3TextConfig(sliding_window=512), "gemma", 3_000)


def test_the_decline_probability_is_read_at_the_first_position_only() -> None:
    """Decoding keeps log p of the decline's first token from the first position's logits (the one
    answer-level value pool() hands the detector), whatever token is then chosen."""
    decline_id = 2
    decoding = Decoding(None, 3, None, None, torch.zeros(3, 1, 1, 5), torch.zeros(3, 1),
                        None, frozenset(), 0, 0.0, decline_id)
    first, second = torch.tensor([0.0, 3.0, 1.0, -2.0]), torch.tensor([0.0, 0.0, 9.0, 0.0])
    decoding.accept(first)
    decoding.accept(second)
    assert decoding.token == 2 and decoding.logprobs[0] == pytest.approx(float(first.log_softmax(-1)[1]))
    assert decoding.decline_logprob == pytest.approx(float(first.log_softmax(-1)[decline_id]))
    generation = _generation(torch.rand(2, 1, 1, FIRST_CHUNK + 1), [-0.1, -0.2], n_context=1)
    generation.decline_logprob = decoding.decline_logprob
    assert pool(generation).decline == decoding.decline_logprob


def test_lookback_pools_masses_before_the_ratio() -> None:
    masses = torch.zeros(2, 1, 1, FIRST_CHUNK + 1)  # (T, L, H, S)
    masses[0, ..., FIRST_CHUNK], masses[0, ..., GENERATED] = 0.01, 0.0  # first token: ratio 1, tiny mass
    masses[1, ..., FIRST_CHUNK], masses[1, ..., GENERATED] = 0.1, 0.9  # ratio 0.1
    assert lookback_ratios(masses).tolist() == pytest.approx([1.0, 0.1])
    assert pooled_lookback(masses) == pytest.approx(0.11 / 1.01)  # not the mean of ratios, 0.55
    gen = _generation(masses, [-0.5, -2.0], n_context=4)
    p = pool(gen)
    assert p.lookback.tolist() == pytest.approx([0.11 / 1.01])
    assert (p.logprob_min, p.logprob_mean, p.n_tokens) == (-2.0, -1.25, 2)
    # per key: chunk mass over 4 context keys; token 1 sees 1 answer key, token 0 none
    assert p.density.tolist() == pytest.approx([(0.11 / 4) / (0.11 / 4 + 0.9)])
    assert pool(gen, torch.tensor([False, True])).lookback.tolist() == pytest.approx([0.1])


def test_density_does_not_punish_a_short_source() -> None:
    # the same per-key attention on a 2-token and on a 200-token source: raw lookback differs 100-fold
    # in chunk mass, the per-key density not at all
    def gen(n_context: int) -> Generation:
        masses = torch.zeros(3, 1, 1, FIRST_CHUNK + 1)
        masses[..., FIRST_CHUNK] = 0.002 * n_context
        masses[1:, ..., GENERATED] = 0.3
        return _generation(masses, [0.0] * 3, n_context)

    short, long = pool(gen(2)), pool(gen(200))
    assert short.lookback[0] < 0.1 < 0.5 < long.lookback[0]
    assert short.density[0] == pytest.approx(long.density[0])


def test_detector_round_trips_and_fits(tmp_path: Path) -> None:
    baseline = Detector.baseline()
    assert baseline.method == BASELINE_METHOD and not baseline.trained and baseline.fits(7, 3)
    masses = torch.zeros(1, 1, 1, FIRST_CHUNK + 1)
    masses[..., FIRST_CHUNK] = 0.5
    masses[..., GENERATED] = 0.5
    assert baseline.risk(pool(_generation(masses, [0.0], 2))) == pytest.approx(0.5)  # 1 - lookback

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    x = rng.normal(0.6, 0.05, (200, 6)) - 0.1 * y[:, None]  # hallucinated: lower lookback
    trained = Detector.fit(x, y, feature_set="lookback", n_layers=2, n_heads=3, c=1.0,
                           meta={"trained_on": "synthetic"})
    risk = trained.predict(x)
    assert risk.shape == (200,) and ((risk >= 0.5) == y).mean() > 0.9
    trained.save(tmp_path / "d.json")
    again = Detector.load(tmp_path / "d.json")
    assert again == trained and np.allclose(again.predict(x), risk)
    assert again.fits(2, 3) and not again.fits(30, 9)
    assert Detector.for_generator("no-such-model", tmp_path) == Detector.baseline()
    (tmp_path / "toy.json").write_text((tmp_path / "d.json").read_text())
    assert Detector.for_generator("toy+int8", tmp_path) == trained  # int8 shares the fp32 file


# ---- attribution with the real model


@pytest.mark.slow
def test_shares_sum_to_one_and_sentences_slice_the_answer(generator: Generator) -> None:
    sources = make_sources()
    gen = generator.generate("How tall is Mount Etna?", sources)
    report = attribute(gen, sources)
    shares = [s.attention_mass for s in report.sources]
    assert all(x is not None and 0 <= x <= 1 for x in shares)
    assert sum(x or 0 for x in shares) == pytest.approx(1.0, abs=1e-5)
    assert 0 < report.attention_sink < 1
    assert report.sentences
    for sentence in report.sentences:
        assert gen.text[sentence.start : sentence.end] == sentence.text
        assert sum(sentence.support.values()) == pytest.approx(1.0, abs=1e-5)
        assert set(sentence.support) == {10, 20, 30}
        assert 0 <= sentence.lookback <= 1 and 0 <= sentence.risk <= 1
        assert sentence.flagged == (sentence.risk >= report.hallucination.threshold)
    assert report.hallucination.risk == max(s.risk for s in report.sentences)


@pytest.mark.slow
def test_the_chunk_holding_the_answer_gets_the_largest_share(generator: Generator) -> None:
    # The answer is in the first chunk, the farthest from the question. (SmolLM2-135M's boilerplate
    # tokens, "The answer is:", look at the chunk nearest the question whatever it says; an answer
    # in the last chunk would pass for that reason alone.)
    sources = make_sources()  # Volcanoes, Coffee, Chess
    gen = generator.generate("How tall is Mount Etna?", sources)
    assert "3,357" in gen.text
    report = attribute(gen, sources)
    top = max(report.sources, key=lambda s: s.attention_mass or 0)
    assert top.title == "Volcanoes", [(s.title, s.attention_mass) for s in report.sources]


FAITHFUL = "Coffee was first grown in Yemen in the 15th century."
INVENTED = "Coffee was first grown by monks on the Moon in 1969."


@pytest.mark.slow
def test_a_contradicting_answer_is_riskier_than_a_faithful_one(generator: Generator) -> None:
    sources = make_sources()
    question = "Where and when was coffee first cultivated?"
    faithful = generator.teacher_force(question, sources, FAITHFUL)
    invented = generator.teacher_force(question, sources, INVENTED)
    faithful_risk = attribute(faithful, sources).hallucination.risk
    invented_risk = attribute(invented, sources).hallucination.risk
    assert invented_risk > faithful_risk


@pytest.mark.slow
def test_sources_left_out_of_the_prompt_get_no_share(generator: Generator) -> None:
    small = copy.copy(generator)
    small.prompts = copy.copy(generator.prompts)
    small.prompts.max_context_tokens = 60
    sources = make_sources()
    gen = small.generate("How tall is Mount Etna?", sources, max_new_tokens=8)
    report = attribute(gen, sources)
    left_out = sources[gen.prompt.n_chunks :]
    assert left_out and all(s.attention_mass == 0.0 for s in left_out)
    assert sum(s.attention_mass or 0 for s in report.sources) == pytest.approx(1.0, abs=1e-5)
