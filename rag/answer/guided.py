"""Decoding that looks back: Lookback Lens guided decoding (Chuang et al., 2024, arXiv:2407.07071, §4).

The prompt is prefilled once. Then, step by step, a few candidate continuations of `step_tokens`
tokens each are decoded from the kept state: candidate 0 greedily, the others sampled at
`TEMPERATURE` from a generator seeded per request (the same question and sources give the same
answer). Each candidate's answer so far (the kept tokens and its own) is pooled
(`rag.attribute.detector.pool`) and scored by the detector; the least risky is kept, its cache, attention and
log-probabilities with it, and the others are dropped. So the returned `Generation` is exactly the kept
path's, and attribution reads it as it reads a greedy one. With one candidate this is greedy decoding.

Each candidate decodes from its own copy of the kept cache and attention buffers, one after the
other; a step costs about candidates x step_tokens forwards where greedy costs step_tokens.
Continuous batching is bypassed: a guided answer is decoded alone.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch

from rag.attribute.detector import Detector, pool
from rag.generate.decoding import Decoding, Generation
from rag.generate.generator import Generator
from rag.types import Source

TEMPERATURE = 0.7  # sampled candidates: varied, yet still likely under the model


@dataclass
class _Candidate:
    decoding: Decoding
    pieces: list[str] = field(default_factory=list)  # text its tokens made safe to show
    alive: bool = True  # False once it ended (EOS, a stop string, the length)
    risk: float = 0.0


def _fork(generator: Generator, kept: Decoding) -> Decoding:
    """A copy of a decoding that can be run and dropped without touching the original: its own
    cache (holding the same keys and values), attention buffers, reducer, stream and log-probs."""
    twin = copy.copy(kept)
    layers = cast(list[Any], kept.cache.layers)
    twin.cache = generator.cache_of([(layer.keys, layer.values) for layer in layers])
    twin.features, twin.token_masses = kept.features.clone(), kept.token_masses.clone()
    twin.reducer = copy.copy(kept.reducer)
    twin.stream = kept.stream.copy()
    twin.logprobs = list(kept.logprobs)
    return twin


def _sample(logits: torch.Tensor, rng: torch.Generator) -> int:
    probs = torch.softmax(logits.float().cpu() / TEMPERATURE, -1)
    return int(torch.multinomial(probs, 1, generator=rng))


def _partial(decoding: Decoding) -> Generation:
    """The answer so far as a Generation (what the detector would see were it to end here)."""
    text, ids, offsets = decoding.stream.result()
    n = len(ids)
    return Generation(text=text, token_ids=ids, offsets=offsets, features=decoding.features[:n].cpu(),
                      token_masses=decoding.token_masses[:n].cpu(), logprobs=decoding.logprobs[:n],
                      prompt=decoding.prompt, stop_reason=decoding.stop_reason, prefill_ms=0.0, decode_ms=0.0,
                      decline_logprob=decoding.decline_logprob)


def _run(
    generator: Generator, kept: Decoding, logits: torch.Tensor, steps: int, rng: torch.Generator | None
) -> _Candidate:
    """Decode up to `steps` tokens from the kept state (its next token's logits given): greedy when
    `rng` is None, else sampled."""
    candidate = _Candidate(_fork(generator, kept))
    d = candidate.decoding
    for i in range(steps):
        d.accept(logits, None if rng is None else _sample(logits, rng))
        candidate.alive = d.advance(candidate.pieces.append)
        if not candidate.alive or i == steps - 1:
            break
        logits = generator.step(d)
    return candidate


@torch.inference_mode()
def guided_generate(
    generator: Generator,
    detector: Detector,
    question: str,
    sources: Sequence[Source],
    *,
    candidates: int = 3,
    step_tokens: int = 8,
    seed: int = 0,
    max_new_tokens: int | None = None,
    on_token: Callable[[str], None] | None = None,
) -> Generation:
    """An answer decoded `step_tokens` at a time, keeping of `candidates` continuations the one the
    detector scores least risky (ties go to the greedy one). Only the kept text is streamed."""
    if candidates < 1 or step_tokens < 1:
        raise ValueError(f"candidates and step_tokens must be >= 1, not {candidates} and {step_tokens}")
    rng = torch.Generator().manual_seed(seed)
    kept, logits = generator.prefill_logits(question, sources, max_new_tokens=max_new_tokens)
    while True:
        tried = [_run(generator, kept, logits, step_tokens, rng if k else None) for k in range(candidates)]
        for c in tried:
            c.risk = detector.risk(pool(_partial(c.decoding)))
        best = min(tried, key=lambda c: c.risk)  # the first of equals: greedy first
        kept = best.decoding
        if on_token is not None:
            for piece in best.pieces:
                on_token(piece)
        if not best.alive:
            return kept.finish(on_token)
        logits = generator.step(kept)
