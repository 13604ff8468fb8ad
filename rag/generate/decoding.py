"""One request's decoding state and its result. A `Decoding` is what a prefill leaves (KV cache,
attention buffers, text stream, the token to feed next); `rag.generate.generator.Generator` runs its forwards,
alone or, through `rag.generate.batching`, in a batch with others, and `rag.answer.guided` forks it. It ends
as a `Generation`: the answer and, per answer token, where the model looked.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from transformers import DynamicCache

from rag.generate.attention import AttentionReducer
from rag.generate.prompt import Prompt
from rag.generate.textstream import TextStream
from rag.types import Source


@dataclass
class Generation:
    """An answer and, per answer token, its attention mass on every segment of the prompt."""

    text: str
    token_ids: list[int]  # answer tokens (no EOS), aligned with offsets and features
    offsets: list[tuple[int, int]]  # per token: char [start, end) in text (empty for invisible tokens)
    features: torch.Tensor  # (T, L, H, S) float32 on CPU: attention mass per layer, head, segment
    # (T, P) float32 on CPU: mass on each prompt token, mean over heads of the attribution layers
    token_masses: torch.Tensor
    logprobs: list[float]  # per token: the model's log-probability of it (its confidence)
    prompt: Prompt
    stop_reason: str  # "eos", "stop_string", "length" or "teacher_forced"
    prefill_ms: float
    decode_ms: float
    units_cached: int = 0  # parallel prefill: chunk units found in the chunk KV cache
    units_encoded: int = 0  # ... and encoded for this prompt (cache misses)
    # log p, at the answer's first position, of the first token of the reply the instruction asks for
    # when the sources lack the answer (rag.generate.prompt.DECLINE_TEXT): how near the model came to
    # declining
    decline_logprob: float = 0.0


class Decoding:
    """One request being decoded: its KV cache, attention buffers, text stream and the token to feed
    next. `advance` and `accept` are the two halves of a decoding step around the model's forward,
    so a step runs the same whether the forward was this request's alone or a batch's."""

    def __init__(
        self,
        prompt: Prompt,
        n_new: int,
        cache: DynamicCache,
        reducer: AttentionReducer,
        features: torch.Tensor,
        token_masses: torch.Tensor,
        stream: TextStream,
        eos_ids: frozenset[int],
        units_encoded: int,
        started: float,
        decline_id: int,
    ) -> None:
        self.prompt, self.n_new, self.cache, self.reducer = prompt, n_new, cache, reducer
        self.features, self.token_masses, self.stream, self.eos_ids = features, token_masses, stream, eos_ids
        self.units_encoded = units_encoded
        self.started = started
        self.decline_id = decline_id
        self.decline_logprob = 0.0
        self.prefill_ms = 0.0
        self.logprobs: list[float] = []
        self.token = -1
        self.step = -1  # index of the answer token `token` is
        self.stop_reason = "length"

    def accept(self, logits: torch.Tensor, token: int | None = None) -> None:
        """Take `token` (default: the greedy one) as the next, from one position's logits (V,)."""
        self.token = int(logits.argmax()) if token is None else token
        logp = torch.log_softmax(logits.float(), -1)
        self.logprobs.append(float(logp[self.token]))
        if self.step == -1:
            self.decline_logprob = float(logp[self.decline_id])
        self.step += 1

    def advance(self, on_token: Callable[[str], None] | None) -> bool:
        """Emit the token just chosen; True when another forward is wanted (the reducer then targets
        the next token's rows), False when the answer ended (EOS, a stop string, the length)."""
        if self.token in self.eos_ids:
            self.stop_reason = "eos"
            return False
        piece = self.stream.push(self.token)
        if on_token is not None and piece:
            on_token(piece)
        if self.stream.stopped:
            self.stop_reason = "stop_string"
            return False
        if self.step + 1 == self.n_new:
            return False
        nxt = slice(self.step + 1, self.step + 2)
        self.reducer.target(slice(None), self.features[nxt], self.token_masses[nxt])
        return True

    def next_ids(self) -> torch.Tensor:
        return torch.tensor([[self.token]], device=self.features.device)

    def finish(self, on_token: Callable[[str], None] | None) -> Generation:
        tail = self.stream.finish()
        if on_token is not None and tail:
            on_token(tail)
        text, token_ids, offsets = self.stream.result()
        total_ms = (time.perf_counter() - self.started) * 1000
        return Generation(
            text=text,
            token_ids=token_ids,
            offsets=offsets,
            features=self.features[: len(token_ids)].cpu(),
            token_masses=self.token_masses[: len(token_ids)].cpu(),
            logprobs=self.logprobs[: len(token_ids)],
            prompt=self.prompt,
            stop_reason=self.stop_reason,
            prefill_ms=self.prefill_ms,
            decode_ms=total_ms - self.prefill_ms,
            units_cached=len(self.prompt.units) - self.units_encoded,
            units_encoded=self.units_encoded,
            decline_logprob=self.decline_logprob,
        )


class Decoder(Protocol):
    """What answers one request greedily: a `Generator` alone, or a `DecodeBatcher` that shares each
    forward with concurrent requests. The answer pipeline holds one and cannot tell which."""

    def generate(
        self,
        question: str,
        sources: Sequence[Source],
        *,
        max_new_tokens: int | None = None,
        on_token: Callable[[str], None] | None = None,
    ) -> Generation: ...
