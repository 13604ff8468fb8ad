"""The generator with the real packaged model (SmolLM2-135M): prompt layout, the prefix cache, and
attention masses collected in the decoding pass itself."""

from __future__ import annotations

import copy

import pytest
import torch

from rag.generate.attention import ATTENTION, EAGER_ATTENTION, FIRST_CHUNK, GENERATED, QUESTION, SINK
from rag.generate.generator import Generator
from rag.generate.textstream import TextStream
from tests.conftest import MODELS_CACHE
from tests.factories import make_sources

pytestmark = pytest.mark.slow


def test_gguf_is_converted_once_into_the_models_cache(generator: Generator) -> None:
    folder = MODELS_CACHE / "SmolLM2-135M-Instruct.Q4_1"
    assert (folder / "config.json").exists() and generator.name == folder.name
    assert not [p for p in MODELS_CACHE.iterdir() if ".converting-" in p.name]


def test_prompt_labels_every_token_with_its_segment(generator: Generator) -> None:
    sources = make_sources()
    prompt = generator.prompts.build("Where was coffee first grown?", sources)
    decode = generator.tokenizer.decode
    assert prompt.segments[0] == SINK and prompt.chunk_ids == [10, 20, 30]
    for i, (source, (start, end)) in enumerate(zip(sources, prompt.chunk_spans, strict=True)):
        block = decode(prompt.token_ids[start:end])
        assert block.startswith(f"[{i + 1}] {source.title}") and source.text in block
        assert set(prompt.segments[start:end]) == {FIRST_CHUNK + i}
    assert decode(prompt.token_ids[slice(*prompt.question_span)]).strip() == "Where was coffee first grown?"
    assert generator.prompts.instruction in decode(prompt.token_ids[slice(*prompt.instruction_span)])
    assert set(prompt.segments[slice(*prompt.question_span)]) == {QUESTION}


def test_prefix_cache_splits_at_a_token_boundary(generator: Generator) -> None:
    prompt = generator.prompts.build("Where was coffee first cultivated?", make_sources())
    assert prompt.prefix_len > 0
    prefix = generator.tokenizer.decode(prompt.token_ids[: prompt.prefix_len])
    assert prompt.text.startswith(prefix) and generator.prompts.instruction in prefix
    # a prompt that would merge tokens across the split runs without the cache
    merged = prompt.text[: len(prefix)].rstrip("\n") + "\n\n" + prompt.text[len(prefix) :]
    ids = generator.tokenizer(merged, add_special_tokens=False)["input_ids"]
    if ids[: prompt.prefix_len] != prompt.token_ids[: prompt.prefix_len]:
        assert generator.prompts.prefix_len(merged, ids) == 0


def test_prefix_cache_gives_identical_output(generator: Generator) -> None:
    question, sources = "How tall is Mount Etna?", make_sources()
    cached = generator.generate(question, sources)
    uncached = generator.generate(question, sources, use_prefix_cache=False)
    assert cached.prompt.prefix_len > 0 and uncached.prompt.prefix_len == 0
    assert cached.token_ids == uncached.token_ids and cached.text == uncached.text
    torch.testing.assert_close(cached.features, uncached.features, atol=1e-4, rtol=0)


def test_attention_is_collected_in_the_decoding_pass(generator: Generator) -> None:
    calls = []
    hook = generator.model.register_forward_hook(lambda *_: calls.append(1))
    try:
        gen = generator.generate("Which country produces the most coffee?", make_sources())
    finally:
        hook.remove()
    # one prefill, then one pass per token after the first; a final EOS came from the last pass
    assert len(calls) == len(gen.token_ids) + (gen.stop_reason == "eos")
    shape = (len(gen.token_ids), generator.n_layers, generator.n_heads, FIRST_CHUNK + 3)  # (T, L, H, S)
    assert gen.features.shape == shape
    T, L, H, _ = shape
    # every (token, layer, head) is a full softmax over the positions it saw
    torch.testing.assert_close(gen.features.sum(-1), torch.ones(T, L, H), atol=1e-4, rtol=0)
    assert float(gen.features[0, ..., GENERATED].abs().max()) == 0.0  # nothing generated before it


def test_one_row_prefill_equals_the_eager_path(generator: Generator) -> None:
    """SDPA outputs with weights for the kept rows only: the same tokens and masses as computing every
    row's weights eagerly, in decoding and in teacher forcing."""
    question, sources = "How tall is Mount Etna?", make_sources()
    fast = generator.generate(question, sources)
    forced = generator.teacher_force(question, sources, "It is about 3,357 metres high [1].")
    generator.model.set_attn_implementation(EAGER_ATTENTION)
    try:
        eager = generator.generate(question, sources)
        eager_forced = generator.teacher_force(question, sources, "It is about 3,357 metres high [1].")
    finally:
        generator.model.set_attn_implementation(ATTENTION)
    assert fast.token_ids == eager.token_ids and fast.text == eager.text
    for a, b in ((fast, eager), (forced, eager_forced)):
        torch.testing.assert_close(a.features, b.features, atol=1e-5, rtol=0)
        torch.testing.assert_close(a.token_masses, b.token_masses, atol=1e-5, rtol=0)
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)


def test_streamed_pieces_make_the_answer_and_offsets_slice_it(generator: Generator) -> None:
    pieces: list[str] = []
    gen = generator.generate("How tall is Mount Etna?", make_sources(), on_token=pieces.append)
    assert gen.text and "".join(pieces) == gen.text
    assert gen.prefill_ms > 0 and gen.decode_ms > 0
    assert len(gen.offsets) == len(gen.token_ids)
    rebuilt = "".join(gen.text[s:e] for s, e in gen.offsets)
    assert rebuilt.strip() == gen.text


def test_max_new_tokens_limits_the_answer(generator: Generator) -> None:
    gen = generator.generate("Describe the Sicilian Defence in detail.", make_sources(), max_new_tokens=3)
    assert len(gen.token_ids) <= 3 and gen.features.shape[0] == len(gen.token_ids)


def test_teacher_forcing_reproduces_the_decoding_features(generator: Generator) -> None:
    question, sources = "Where was coffee first cultivated?", make_sources()
    gen = generator.generate(question, sources)
    forced = generator.teacher_force(question, sources, gen.text)
    assert forced.token_ids == gen.token_ids
    torch.testing.assert_close(forced.features, gen.features, atol=1e-4, rtol=0)
    assert forced.stop_reason == "teacher_forced" and forced.prompt.prefix_len > 0
    # how near the first position came to a decline is read off the same logits on both paths
    assert forced.decline_logprob == pytest.approx(gen.decline_logprob, abs=1e-3)
    assert gen.decline_logprob < 0


def test_context_budget_keeps_the_top_ranked_sources(generator: Generator) -> None:
    small = copy.copy(generator.prompts)
    small.max_context_tokens = 60
    prompt = small.build("How tall is Mount Etna?", make_sources())
    assert 1 <= prompt.n_chunks < 3 and prompt.chunk_ids == [10, 20, 30][: prompt.n_chunks]


def test_stream_holds_back_a_stop_string_until_it_is_decided(generator: Generator) -> None:
    tok = generator.tokenizer
    stream = TextStream(tok, ["\nQuestion:"])
    pieces = [stream.push(t) for t in tok("Paris.\nQuestion: what", add_special_tokens=False)["input_ids"]]
    pieces.append(stream.finish())
    assert stream.stopped and "".join(pieces) == "Paris."
    text, ids, offsets = stream.result()
    assert text == "Paris." and tok.decode(ids) == "Paris." and offsets[-1][1] == len(text)
