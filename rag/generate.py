"""Answer generation that shows its work: greedy decoding over the retrieved chunks which, in the same
forward pass, records how much each generated token attended to each part of the prompt.

Follow one token: `Generator.generate` builds a `Prompt` (instruction, chunks [1]..[k], question; every
token labelled with the segment it belongs to), reuses the instruction prefix's KV cache, and decodes
greedily. Each forward pass runs `rag.attention.segment_attention`, which keeps only per-segment
attention masses, a (tokens, layers, heads, segments) tensor, never the attention maps; each step
also keeps the log-probability of the chosen token. `rag.attribution` turns them into chunk shares,
lookback ratios and risks.

References: Lookback Lens (Chuang et al., 2024, arXiv:2407.07071) for the lookback ratio;
"Efficient Streaming Language Models with Attention Sinks" (Xiao et al., 2023) for why the first
token is reported apart.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import torch
from transformers import DynamicCache

from rag.attention import (
    ATTENTION,
    FIRST_CHUNK,
    GENERATED,
    INSTRUCTION,
    QUESTION,
    SINK,
    AttentionReducer,
)
from rag.config import Settings
from rag.inputs import (
    MAX_ANSWER_CHARS,
    MAX_ANSWER_TOKENS,
    MAX_CONTEXT_CHARS,
    MAX_QUESTION_CHARS,
    MAX_QUESTION_TOKENS,
)
from rag.kvcache import KV, ChunkKVCache, KVDisk, UnitKey, model_folder, rope_of, shift_keys
from rag.loading import load_causal_lm
from rag.textstream import TextStream
from rag.types import BadInput, Source

# Short answers: on SQuAD questions a 0.5B model asked for "one short sentence" copied the answer
# instead of paraphrasing the paragraph around it, and said "I don't know" where a longer
# instruction made it guess.
INSTRUCTION_TEXT = (
    "Answer the question using only the numbered sources. Reply with one short sentence that cites "
    "its source as [n]. If the sources do not contain the answer, reply: I don't know."
)
# Tokens that end a turn in common chat templates; the model's own EOS ids are always used too.
END_OF_TURN_TOKENS = ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|endoftext|>", "</s>")
# A base model (no chat template) does not stop by itself: it would write the next question.
BASE_MODEL_STOP_STRINGS = ("\nQuestion:", "\nSources:", "\n\n\n")


# --------------------------------------------------------------------------------------------------
# typed results


@dataclass(frozen=True)
class Prompt:
    """A rendered prompt and which segment each of its tokens belongs to."""

    text: str
    token_ids: list[int]
    segments: list[int]  # per token: SINK, INSTRUCTION, QUESTION or FIRST_CHUNK + i
    chunk_ids: list[int]  # the chunks in the prompt, in order [1]..[k] (may be fewer than retrieved)
    chunk_spans: list[tuple[int, int]]  # token [start, end) of each chunk (its "[n] title" line included)
    instruction_span: tuple[int, int]
    question_span: tuple[int, int]  # tokens of the question text itself
    prefix_len: int  # leading tokens whose KV comes from the shared prefix cache (0: none)
    token_chars: list[tuple[int, int]]  # per token: char [start, end) in text
    chunk_text_at: list[int]  # per chunk: the char of text where its Source.text[0] would sit
    # parallel prefill: the units after the prefix whose KV is encoded on its own (chunk bodies and the
    # numbering glue between them) as (cache key, token start, token end); empty for a full prefill
    units: tuple[tuple[UnitKey, int, int], ...] = ()

    @property
    def n_chunks(self) -> int:
        return len(self.chunk_ids)

    @property
    def n_segments(self) -> int:
        return FIRST_CHUNK + self.n_chunks


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


# --------------------------------------------------------------------------------------------------
# the generator


@dataclass(frozen=True)
class _PrefixCache:
    """The instruction prefix's keys and values, computed once and only ever read."""

    text: str
    token_ids: list[int]
    kv: tuple[tuple[torch.Tensor, torch.Tensor], ...]  # per layer: (1, kvH, prefix_len, D) each


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
    ) -> None:
        self.prompt, self.n_new, self.cache, self.reducer = prompt, n_new, cache, reducer
        self.features, self.token_masses, self.stream, self.eos_ids = features, token_masses, stream, eos_ids
        self.units_encoded = units_encoded
        self.started = started
        self.prefill_ms = 0.0
        self.logprobs: list[float] = []
        self.token = -1
        self.step = -1  # index of the answer token `token` is
        self.stop_reason = "length"

    def accept(self, logits: torch.Tensor, token: int | None = None) -> None:
        """Take `token` (default: the greedy one) as the next, from one position's logits (V,)."""
        self.token = int(logits.argmax()) if token is None else token
        self.logprobs.append(_logprob(logits, self.token))
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
        )


class Generator:
    """A causal LM that answers from numbered sources and reports where it looked while answering."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        name: str = "",
        instruction: str = INSTRUCTION_TEXT,
        max_new_tokens: int = 160,
        max_context_tokens: int = 1400,
        stop_strings: Sequence[str] | None = None,
        prefill: str = "full",
        kv_cache_mb: int = 256,
        kv_disk: Path | None = None,
        kv_disk_mb: int = 0,
    ) -> None:
        if not tokenizer.is_fast:
            raise ValueError("the generator needs a fast tokenizer (offset mappings locate each chunk)")
        if model.config._attn_implementation != ATTENTION:
            model.set_attn_implementation(ATTENTION)
        self.model, self.tokenizer = model.eval(), tokenizer
        self.name = name or getattr(model.config, "_name_or_path", "") or type(model).__name__
        self.instruction = instruction
        self.max_new_tokens = max_new_tokens
        self.max_context_tokens = max_context_tokens
        self.has_template = bool(getattr(tokenizer, "chat_template", None))
        default_stops = () if self.has_template else BASE_MODEL_STOP_STRINGS
        self.stop_strings = tuple(stop_strings) if stop_strings is not None else default_stops
        self.eos_ids = self._eos_ids()
        config = model.config.get_text_config()
        self.n_layers: int = config.num_hidden_layers
        self.n_heads: int = config.num_attention_heads
        self.device = next(model.parameters()).device
        self._prefix = self._build_prefix_cache()
        self._rotary = rope_of(model)
        if prefill not in ("full", "parallel"):
            raise ValueError(f"prefill is 'full' or 'parallel', not {prefill!r}")
        if prefill == "parallel" and (self._rotary is None or self._prefix is None):
            raise ValueError(f"parallel prefill needs plain RoPE and a chat prefix; {self.name} has not both")
        self.prefill = prefill
        disk = None
        if prefill == "parallel" and kv_disk is not None and self._prefix is not None:
            folder = kv_disk / model_folder(self.name, model, self._prefix.token_ids)
            disk = KVDisk.open(folder, kv_disk_mb << 20, self.device)
        self.chunk_kv = ChunkKVCache(kv_cache_mb << 20, disk)

    @classmethod
    def load(cls, settings: Settings | None = None) -> Generator:
        """The configured generator (settings.generator), converted into settings.models_dir if GGUF."""
        settings = settings or Settings()
        quantize = settings.quantize if settings.device == "cpu" else "none"
        model, tokenizer, name = load_causal_lm(settings.generator, settings.models_dir, settings.device,
                                                quantize)
        return cls(model, tokenizer, name=name, max_new_tokens=settings.max_new_tokens,
                   max_context_tokens=settings.max_context_tokens, prefill=settings.prefill,
                   kv_cache_mb=settings.kv_cache_mb, kv_disk=settings.home_dir / "kv",
                   kv_disk_mb=settings.kv_disk_mb)

    # ---- prompt

    def check_lengths(self, question: str, answer: str | None = None, context: str | None = None) -> None:
        """BadInput for text that would not fit the decoder's budget; a given context stands in for
        retrieved chunks, so it gets their budget. Reads only the tokenizer: safe on any thread."""
        limits = {
            "question": (question, MAX_QUESTION_TOKENS, MAX_QUESTION_CHARS),
            "answer": (answer, MAX_ANSWER_TOKENS, MAX_ANSWER_CHARS),
            "context": (context, self.max_context_tokens, MAX_CONTEXT_CHARS),
        }
        for field, (text, limit, chars) in limits.items():
            n = len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0
            if n > limit:
                raise BadInput(f"the {field} is {n:,} tokens long; the limits are {limit:,} tokens and "
                               f"{chars:,} characters: shorten it")

    def _eos_ids(self) -> frozenset[int]:
        ids: set[int] = set()
        for eos in (self.model.generation_config.eos_token_id, self.tokenizer.eos_token_id):
            if eos is not None:
                ids.update(eos if isinstance(eos, list) else [eos])
        vocab = self.tokenizer.get_vocab()
        ids.update(vocab[t] for t in END_OF_TURN_TOKENS if t in vocab and self.has_template)
        return frozenset(ids)

    def _encode(self, text: str, whole: bool = True) -> tuple[list[int], list[tuple[int, int]]]:
        # a chat template writes its own special tokens; a plain prompt gets the tokenizer's (e.g. BOS)
        enc = self.tokenizer(text, add_special_tokens=whole and not self.has_template,
                             return_offsets_mapping=True)
        return enc["input_ids"], [tuple(o) for o in enc["offset_mapping"]]

    def _render(self, user: str) -> tuple[str, int, int]:
        """(prompt text, char where the instruction ends, char where the user content starts)."""
        if not self.has_template:
            text = f"{self.instruction}\n\n{user}\nAnswer:"
            return text, len(self.instruction), len(self.instruction) + 2
        messages = [{"role": "system", "content": self.instruction}, {"role": "user", "content": user}]
        try:
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception:  # templates without a system role (e.g. Gemma) raise; fold it into the turn
            user = f"{self.instruction}\n\n{user}"
            text = self.tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                                      add_generation_prompt=True)
        user_at = text.rfind(user)
        instruction_end = text.find(self.instruction) + len(self.instruction)
        if user_at < 0 or instruction_end < len(self.instruction):
            raise ValueError("the chat template rewrites message text; the prompt's chunks cannot be located")
        if user.startswith(self.instruction):
            user_at = instruction_end + 2  # the per-request part starts after the folded instruction
        return text, instruction_end, user_at

    def _source_block(self, n: int, source: Source) -> str:
        title = source.title or Path(source.path).name
        return f"[{n}] {title}\n{source.text.strip()}"

    def build_prompt(self, question: str, sources: Sequence[Source]) -> Prompt:
        """Render instruction, sources [1]..[k] and question, and label every token with its segment.

        Sources are kept in rank order while their tokens fit max_context_tokens (the first always)."""
        blocks: list[str] = []
        kept: list[Source] = []
        budget = self.max_context_tokens
        for source in sources:
            block = self._source_block(len(blocks) + 1, source)
            cost = len(self._encode(block, whole=False)[0])
            if blocks and cost > budget:
                break
            blocks.append(block)
            kept.append(source)
            budget -= cost
        header = "Sources:\n" if blocks else "Sources: none\n"
        question = question.strip()
        user = header + "\n\n".join(blocks) + f"\n\nQuestion: {question}"
        text, instruction_end, user_at = self._render(user)

        # char ranges of each chunk block and of the question inside the rendered text; a block's
        # body is its source text stripped, after the "[n] title" line
        block_ranges, text_at, at = [], [], user_at + len(header)
        for block, source in zip(blocks, kept, strict=True):
            block_ranges.append((at, at + len(block)))
            lead = len(source.text) - len(source.text.lstrip())
            text_at.append(at + len(block) - len(source.text.strip()) - lead)
            at += len(block) + 2
        question_at = user_at + len(user) - len(question)

        units: tuple[tuple[UnitKey, int, int], ...] = ()
        if self.prefill == "parallel" and blocks:
            ids, offsets, units = self._encode_units(text, user_at, block_ranges, kept)
        else:
            ids, offsets = self._encode(text)
        starts = [start for start, _ in block_ranges]
        segments: list[int] = []
        for start, end in offsets:
            i = bisect.bisect_right(starts, start) - 1
            if start == end == 0 and segments:  # a special token the tokenizer added mid-way: template
                segments.append(QUESTION)
            elif i >= 0 and start < block_ranges[i][1]:
                segments.append(FIRST_CHUNK + i)
            elif start < instruction_end:
                segments.append(INSTRUCTION)
            else:
                segments.append(QUESTION)
        segments[0] = SINK

        def span(lo: int, hi: int) -> tuple[int, int]:
            inside = [t for t, (s, e) in enumerate(offsets) if s < hi and e > lo]
            return (inside[0], inside[-1] + 1) if inside else (0, 0)

        return Prompt(
            text=text,
            token_ids=ids,
            segments=segments,
            chunk_ids=[s.chunk_id for s in kept],
            chunk_spans=[span(lo, hi) for lo, hi in block_ranges],
            instruction_span=span(0, instruction_end),
            question_span=span(question_at, question_at + len(question)),
            prefix_len=len(self._prefix.token_ids) if units and self._prefix else self._prefix_len(text, ids),
            token_chars=offsets,
            chunk_text_at=text_at,
            units=units,
        )

    def _encode_units(
        self, text: str, user_at: int, block_ranges: list[tuple[int, int]], kept: list[Source]
    ) -> tuple[list[int], list[tuple[int, int]], tuple[tuple[UnitKey, int, int], ...]]:
        """Tokenize the prompt piece by piece: the shared prefix, then per chunk its numbering glue
        ("Sources:\n[1]", "\n\n[2]") and its body (" title\ntext"), then the question and template
        tail. Each glue and body is a unit whose KV can be encoded on its own and cached."""
        cuts: list[tuple[int, int, int | None]] = []  # (char start, char end, chunk id or None)
        at = user_at
        for n, ((start, end), source) in enumerate(zip(block_ranges, kept, strict=True), 1):
            body = start + len(f"[{n}]")  # the body keeps its leading space: " title" tokenizes as usual
            cuts += [(at, body, None), (body, end, source.chunk_id)]
            at = end
        ids, offsets = self._encode(text[:user_at])
        texts = {source.chunk_id: source.text for source in kept}
        units = []
        for start, end, chunk_id in [*cuts, (at, len(text), None)]:
            piece_ids, piece_offsets = self._encode(text[start:end], whole=False)
            if end != len(text):
                key = UnitKey.of(chunk_id, piece_ids, "" if chunk_id is None else texts[chunk_id])
                units.append((key, len(ids), len(ids) + len(piece_ids)))
            ids += piece_ids
            offsets += [(s + start, e + start) for s, e in piece_offsets]
        return ids, offsets, tuple(units)

    # ---- prefix cache

    def _build_prefix_cache(self) -> _PrefixCache | None:
        """Run the instruction prefix once; every request then starts from a copy of its KV."""
        text, _, user_at = self._render("Sources:\n[1] x\ny\n\nQuestion: z")
        prefix = text[:user_at]
        ids, _ = self._encode(prefix)
        if not ids:
            return None
        cache = DynamicCache(config=self.model.config)
        with torch.inference_mode():
            self.model(input_ids=torch.tensor([ids], device=self.device), cache=cache,
                       use_cache=True, logits_to_keep=1)
        layers: list[Any] = list(cache.layers)
        kv = tuple((layer.keys, layer.values) for layer in layers)
        return _PrefixCache(text=prefix, token_ids=ids, kv=kv)

    def _prefix_len(self, text: str, ids: list[int]) -> int:
        """How many leading tokens the shared cache covers: all of the prefix, or none when the prompt
        does not split there at a token boundary (prefix + rest must tokenize as the whole does)."""
        p = self._prefix
        if p is None or not text.startswith(p.text):
            return 0
        n = len(p.token_ids)
        rest, _ = self._encode(text[len(p.text):], whole=False)
        return n if ids[:n] == p.token_ids and ids[n:] == rest else 0

    def cache_of(self, kv: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> DynamicCache:
        """A cache holding these per-layer keys and values. update() concatenates into new tensors, so
        the given ones are never written: a shared prefix or batch stays intact."""
        cache = DynamicCache(config=self.model.config)
        for layer, (k, v) in enumerate(kv):
            cache.update(k, v, layer)
        return cache

    def _new_cache(self, prompt: Prompt) -> DynamicCache:
        """A per-request cache holding the prefix (never written: safe for concurrent requests)."""
        prefix = self._prefix if prompt.prefix_len else None
        return self.cache_of(prefix.kv if prefix is not None else ())

    def _start_cache(self, prompt: Prompt) -> tuple[DynamicCache, int, int]:
        """A per-request cache, how many leading prompt tokens it already holds, and how many chunk
        units had to be encoded: the prefix, and in parallel mode every chunk unit too (from the
        chunk cache, encoded on a miss, moved into place by rotating its keys)."""
        cache = self._new_cache(prompt)
        if not prompt.units or self._rotary is None:
            return cache, prompt.prefix_len, 0
        parts, encoded = [], 0
        for key, start, end in prompt.units:
            kv = self.chunk_kv.get(key)
            if kv is None:
                kv = self._encode_unit(prompt.token_ids[start:end])
                self.chunk_kv.put(key, kv)
                encoded += 1
            parts.append((kv, start - prompt.prefix_len))
        for layer in range(self.n_layers):
            keys = torch.cat([shift_keys(self._rotary, kv[layer][0], delta) for kv, delta in parts], dim=2)
            values = torch.cat([kv[layer][1] for kv, _ in parts], dim=2)
            cache.update(keys, values, layer)
        return cache, prompt.units[-1][2], encoded

    def _encode_unit(self, ids: list[int]) -> KV:
        """Keys and values of a unit that follows the prefix and sees nothing else."""
        assert self._prefix is not None
        cache = self.cache_of(self._prefix.kv)
        self.model(input_ids=torch.tensor([ids], device=self.device), cache=cache, use_cache=True,
                   logits_to_keep=1)
        n = len(self._prefix.token_ids)
        return tuple((layer.keys[:, :, n:].clone(), layer.values[:, :, n:].clone())
                     for layer in cast(list[Any], cache.layers))

    # ---- decoding

    def _reducer(self, prompt: Prompt, n_answer: int) -> AttentionReducer:
        """A reducer for a pass over this prompt and up to n_answer answer tokens: segment membership
        (one-hot) of every position the answer may attend to."""
        segments = torch.tensor(prompt.segments + [GENERATED] * n_answer, device=self.device)
        membership = torch.nn.functional.one_hot(segments, prompt.n_segments).float()
        return AttentionReducer(membership, self.n_layers, len(prompt.token_ids))

    def _forward(
        self, ids: torch.Tensor, cache: DynamicCache, reducer: AttentionReducer, keep: int = 1
    ) -> torch.Tensor:
        """Logits of the last `keep` positions: (V,) for one, (keep, V) for more."""
        out = self.model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=keep,
                         attention_reducer=reducer)
        return out.logits[0, -1] if keep == 1 else out.logits[0, -keep:]

    def _check_reduced(self, reducer: AttentionReducer) -> None:
        if reducer.layers_seen != self.n_layers:
            raise RuntimeError(
                f"model {self.name} does not route attention through transformers' AttentionInterface "
                f"({reducer.layers_seen}/{self.n_layers} layers reported); attribution needs one that does"
            )

    @torch.inference_mode()
    def generate(
        self,
        question: str,
        sources: Sequence[Source],
        *,
        max_new_tokens: int | None = None,
        on_token: Callable[[str], None] | None = None,
        use_prefix_cache: bool = True,
    ) -> Generation:
        """Greedy answer with attention masses collected in the decoding pass itself."""
        decoding = self.start(question, sources, max_new_tokens=max_new_tokens,
                              use_prefix_cache=use_prefix_cache)
        while decoding.advance(on_token):
            decoding.accept(self.step(decoding))
        return decoding.finish(on_token)

    def step(self, decoding: Decoding) -> torch.Tensor:
        """One forward of a decoding's pending token alone: the next token's logits (V,)."""
        return self._forward(decoding.next_ids(), decoding.cache, decoding.reducer)

    @torch.inference_mode()
    def start(
        self,
        question: str,
        sources: Sequence[Source],
        *,
        max_new_tokens: int | None = None,
        use_prefix_cache: bool = True,
    ) -> Decoding:
        """Prefill: the request's cache, its attention buffers and its first token, ready to decode
        one token per forward (`Generator.generate` alone, `rag.batching` with other requests)."""
        decoding, logits = self.begin(question, sources, max_new_tokens=max_new_tokens,
                                      use_prefix_cache=use_prefix_cache)
        decoding.accept(logits)
        return decoding

    @torch.inference_mode()
    def begin(
        self,
        question: str,
        sources: Sequence[Source],
        *,
        max_new_tokens: int | None = None,
        use_prefix_cache: bool = True,
    ) -> tuple[Decoding, torch.Tensor]:
        """`start` before its first token is chosen: the decoding and the first token's logits (V,),
        for callers that choose tokens otherwise (`rag.guided` samples them)."""
        prompt = self.build_prompt(question, sources)
        if not use_prefix_cache:
            prompt = replace(prompt, prefix_len=0, units=())
        n_new = max_new_tokens or self.max_new_tokens
        reducer = self._reducer(prompt, n_new)
        features = torch.zeros(n_new, self.n_layers, self.n_heads, prompt.n_segments, device=self.device)
        token_masses = torch.zeros(n_new, len(prompt.token_ids), device=self.device)

        # the last prompt position's attention is the first answer token's
        t0 = time.perf_counter()
        cache, held, encoded = self._start_cache(prompt)
        ids = torch.tensor([prompt.token_ids[held:]], device=self.device)
        reducer.target(slice(-1, None), features[0:1], token_masses[0:1])
        logits = self._forward(ids, cache, reducer)
        self._check_reduced(reducer)
        decoding = Decoding(prompt, n_new, cache, reducer, features, token_masses,
                            TextStream(self.tokenizer, self.stop_strings), self.eos_ids, encoded, t0)
        decoding.prefill_ms = (time.perf_counter() - t0) * 1000
        return decoding, logits

    def teacher_force(self, question: str, sources: Sequence[Source], answer_text: str) -> Generation:
        """The same attention masses for an answer written elsewhere (see `teacher_force_many`)."""
        return self.teacher_force_many(question, sources, [answer_text])[0]

    @torch.inference_mode()
    def teacher_force_many(
        self, question: str, sources: Sequence[Source], answers: Sequence[str]
    ) -> list[Generation]:
        """Masses and log-probabilities of answers written elsewhere, one forward pass each over the
        answer: the query at position p predicts token p+1, exactly as in decoding. The prompt (less
        its last token) is run once and each answer starts from a copy of its KV cache."""
        prompt = self.build_prompt(question, sources)
        P = len(prompt.token_ids)
        shared, start, encoded = self._start_cache(prompt)
        if start < P - 1:
            self.model(input_ids=torch.tensor([prompt.token_ids[start : P - 1]], device=self.device),
                       cache=shared, use_cache=True, logits_to_keep=1)
        kv = [(layer.keys, layer.values) for layer in cast(list[Any], shared.layers)]
        out = []
        for answer in answers:
            t0 = time.perf_counter()
            enc = self.tokenizer(answer, add_special_tokens=False, return_offsets_mapping=True)
            ids: list[int] = enc["input_ids"]
            T = len(ids)
            features = torch.zeros(T, self.n_layers, self.n_heads, prompt.n_segments, device=self.device)
            token_masses = torch.zeros(T, P, device=self.device)
            logprobs: list[float] = []
            if T:
                cache = self.cache_of(kv)
                reducer = self._reducer(prompt, T)
                reducer.target(slice(0, T), features, token_masses)
                inputs = torch.tensor([[prompt.token_ids[P - 1], *ids[:-1]]], device=self.device)
                logits = self._forward(inputs, cache, reducer, keep=T).view(T, -1)  # (T, V)
                self._check_reduced(reducer)
                logprobs = torch.log_softmax(logits.float(), -1)[torch.arange(T), ids].tolist()
            out.append(
                Generation(
                    text=answer,
                    token_ids=ids,
                    offsets=[(int(s), int(e)) for s, e in enc["offset_mapping"]],
                    features=features.cpu(),
                    token_masses=token_masses.cpu(),
                    logprobs=logprobs,
                    prompt=prompt,
                    stop_reason="teacher_forced",
                    prefill_ms=(time.perf_counter() - t0) * 1000,
                    decode_ms=0.0,
                    units_cached=len(prompt.units) - encoded,
                    units_encoded=encoded,
                )
            )
        return out


def _logprob(logits: torch.Tensor, token: int) -> float:
    """log p(token) under one position's logits (V,)."""
    return float(torch.log_softmax(logits.float(), -1)[token])
