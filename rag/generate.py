"""Answer generation that shows its work: greedy decoding over the retrieved chunks which, in the same
forward pass, records how much each generated token attended to each part of the prompt.

Follow one token: `Generator.generate` builds a `Prompt` (instruction, chunks [1]..[k], question; every
token labelled with the segment it belongs to), reuses the instruction prefix's KV cache, and decodes
greedily. Each forward pass runs `segment_attention` (registered with transformers as the model's
attention implementation), which computes ordinary attention and folds each layer's weights over the
keys into per-segment masses with one matmul: (heads, K) @ membership (K, segments). Only those masses
are kept, a (tokens, layers, heads, segments) tensor, never the attention maps. `rag.attribution`
turns them into chunk shares, lookback ratios and risks.

References: Lookback Lens (Chuang et al., 2024, arXiv:2407.07071) for the lookback ratio;
"Efficient Streaming Language Models with Attention Sinks" (Xiao et al., 2023) for why the first
token is reported apart.
"""

from __future__ import annotations

import bisect
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from transformers import AttentionInterface, AutoModelForCausalLM, AutoTokenizer, DynamicCache
from transformers.masking_utils import AttentionMaskInterface, eager_mask

from rag.config import Settings
from rag.resources import resolve_model_path
from rag.types import BadInput, Source

# Segments of the prompt (+ the answer) that attention is summed over. Chunks come last so that the
# other indices do not depend on how many chunks a prompt has: chunk i is segment FIRST_CHUNK + i.
SINK = 0  # the first token: attention parks there when it has nowhere better to go
INSTRUCTION = 1  # the system instruction (the cached prefix, less the sink)
QUESTION = 2  # the question and the template around it (role markers, "Sources:", "[n] title" glue)
GENERATED = 3  # the answer's own tokens so far
FIRST_CHUNK = 4
SEGMENT_NAMES = ("sink", "instruction", "question", "generated")

ATTENTION = "sightline"  # the attention implementation our models are loaded with (registered below)

INSTRUCTION_TEXT = (
    "You answer questions using only the numbered sources the user gives you. "
    "Cite the sources you use as [n], for example [1]. "
    "If the sources do not contain the answer, say that you don't know."
)
# Characters do not bound tokens (4,000 CJK characters are ~11k tokens, 4,000 digits 4k), and eager
# attention over such a prompt takes minutes and gigabytes: what a user hands the decoder is bounded
# in its own tokens.
MAX_QUESTION_TOKENS = 1024
MAX_ANSWER_TOKENS = 1024
# Tokens that end a turn in common chat templates; the model's own EOS ids are always used too.
END_OF_TURN_TOKENS = ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|endoftext|>", "</s>")
# A base model (no chat template) does not stop by itself: it would write the next question.
BASE_MODEL_STOP_STRINGS = ("\nQuestion:", "\nSources:", "\n\n\n")


# --------------------------------------------------------------------------------------------------
# attention that keeps only per-segment masses


class AttentionReducer:
    """Receives each layer's attention weights during one forward pass and keeps their sums over the
    prompt's segments for the query rows that predict answer tokens. One per forward pass: the
    REST service may decode several requests at once in threads."""

    def __init__(self, membership: torch.Tensor) -> None:
        self.membership = membership  # (N, S) one-hot: position -> segment, N >= every key length
        self.rows: slice = slice(None)  # which query rows of this forward pass to keep
        self.out: torch.Tensor | None = None  # (R, L, H, S) where the kept rows' masses go
        self.layers_seen = 0

    def target(self, rows: slice, out: torch.Tensor) -> None:
        self.rows, self.out = rows, out

    def __call__(self, layer: int, weights: torch.Tensor) -> None:
        assert self.out is not None
        n_keys = weights.shape[-1]
        w = weights[0, :, self.rows].float()  # (H, R, K)
        masses = w @ self.membership[:n_keys]  # (H, R, S)
        self.out[:, layer] = masses.transpose(0, 1)  # (R, H, S)
        self.layers_seen += 1


def segment_attention(
    module: Any,  # the attention layer; its layer_idx says where the masses go
    query: torch.Tensor,  # (B, H, Q, D)
    key: torch.Tensor,  # (B, kvH, K, D)
    value: torch.Tensor,  # (B, kvH, K, D)
    attention_mask: torch.Tensor | None,  # (B, 1, Q, K) additive float, from eager_mask
    scaling: float | None = None,
    dropout: float = 0.0,
    softcap: float | None = None,
    attention_reducer: AttentionReducer | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Eager attention (identical to transformers' eager) that hands its weights to the reducer.

    Grouped-query heads are handled by folding each KV head's query group into the query length,
    so keys and values are never repeated: at Q=1 this costs about what sdpa does."""
    B, H, Q, D = query.shape
    kvH, K = key.shape[1], key.shape[2]
    g = H // kvH  # query heads per KV head; head h uses KV head h // g
    scaling = D**-0.5 if scaling is None else scaling
    q = query.reshape(B, kvH, g * Q, D)
    scores = torch.matmul(q, key.transpose(2, 3)) * scaling  # (B, kvH, g*Q, K)
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    scores = scores.view(B, kvH, g, Q, K)
    if attention_mask is not None:
        scores = scores + attention_mask[:, :, None, :, :K]
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)  # (B, kvH, g, Q, K)
    if attention_reducer is not None:
        attention_reducer(module.layer_idx, weights.view(B, H, Q, K))
    out = torch.matmul(weights.view(B, kvH, g * Q, K), value)  # (B, kvH, g*Q, D)
    return out.view(B, H, Q, D).transpose(1, 2), None  # (B, Q, H, D) as transformers expects


AttentionInterface.register(ATTENTION, segment_attention)
AttentionMaskInterface.register(ATTENTION, eager_mask)


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
    prompt: Prompt
    stop_reason: str  # "eos", "stop_string", "length" or "teacher_forced"
    prefill_ms: float
    decode_ms: float


# --------------------------------------------------------------------------------------------------
# loading


def _gguf_target(models_dir: Path, gguf_name: str) -> Path:
    return models_dir / gguf_name.removesuffix(".gguf")


def convert_gguf(gguf_path: Path, target: Path) -> None:
    """Dequantize a GGUF file into a transformers folder once, so later loads take ~1 s, not ~30 s.

    Written to a temp folder beside the target, then renamed: a crash never leaves a half-converted
    model behind, and of two processes converting at once the second simply keeps the first's."""
    try:
        import accelerate  # noqa: F401  transformers needs it to read GGUF files
    except ImportError as e:
        raise RuntimeError("reading GGUF needs the 'accelerate' package: pip install accelerate") from e
    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model: Any = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    model.hf_quantizer = None  # the weights are plain tensors now; save_pretrained must not re-quantize
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.converting-"))
    tmp.chmod(0o755)  # mkdtemp makes it private; the model folder is not a secret
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_causal_lm(spec: str, models_dir: Path, device: str = "cpu") -> tuple[Any, Any, str]:
    """(model, tokenizer, name) for a model spec; GGUF files are converted once into models_dir."""
    path = resolve_model_path(spec)
    name = Path(path).name if Path(path).exists() else path
    if path.endswith(".gguf"):
        target = _gguf_target(models_dir, Path(path).name)
        if not (target / "config.json").exists():
            convert_gguf(Path(path), target)
        path, name = str(target), target.name
    # fp32 on CPU (fp16 matmuls are slow there); bf16 on accelerators. Masses are summed in fp32.
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    tokenizer = AutoTokenizer.from_pretrained(path)
    model: Any = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation=ATTENTION)
    return model.to(device).eval(), tokenizer, name


# --------------------------------------------------------------------------------------------------
# the generator


@dataclass(frozen=True)
class _PrefixCache:
    """The instruction prefix's keys and values, computed once and only ever read."""

    text: str
    token_ids: list[int]
    kv: tuple[tuple[torch.Tensor, torch.Tensor], ...]  # per layer: (1, kvH, prefix_len, D) each


class _TextStream:
    """Detokenizes the answer as it grows: holds back incomplete UTF-8, leading/trailing whitespace and
    anything that could still become a stop string, so streamed pieces concatenate to the final text."""

    def __init__(self, tokenizer: Any, stop_strings: Sequence[str]) -> None:
        self.tokenizer = tokenizer
        self.stop_strings = tuple(s for s in stop_strings if s)
        self.ids: list[int] = []
        self.ends: list[int] = []  # per token: len(raw text) after it
        self.raw = ""
        self.cut: int | None = None  # where a stop string began
        self.emitted = 0

    def push(self, token_id: int) -> str:
        """Add a token; return the newly safe text (possibly empty)."""
        self.ids.append(token_id)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if not text.endswith("\ufffd"):  # a multi-byte character is complete
            self.raw = text
        self.ends.append(len(self.raw))
        for stop in self.stop_strings:
            at = self.raw.find(stop)
            if at >= 0 and (self.cut is None or at < self.cut):
                self.cut = at
        return self._take(final=False)

    @property
    def stopped(self) -> bool:
        return self.cut is not None

    def finish(self) -> str:
        return self._take(final=True)

    def _visible(self) -> tuple[int, int]:
        text = self.raw if self.cut is None else self.raw[: self.cut]
        return len(text) - len(text.lstrip()), len(text.rstrip())

    def _take(self, final: bool) -> str:
        start, end = self._visible()
        if not final and self.cut is None:
            held = max((n for s in self.stop_strings for n in range(1, len(s)) if self.raw.endswith(s[:n])),
                       default=0)
            end = min(end, len(self.raw) - held)
        begin = max(self.emitted, start)
        if end <= begin:
            return ""
        self.emitted = end
        return self.raw[begin:end]

    def result(self) -> tuple[str, list[int], list[tuple[int, int]]]:
        """(text, kept token ids, per-token char offsets into text). Tokens past a stop string are cut."""
        start, end = self._visible()
        text = self.raw[start:end]
        ids, offsets, prev = [], [], 0
        for token_id, token_end in zip(self.ids, self.ends, strict=True):
            if self.cut is not None and prev >= self.cut:
                break
            ids.append(token_id)
            offsets.append((min(max(prev - start, 0), len(text)), min(max(token_end - start, 0), len(text))))
            prev = token_end
        return text, ids, offsets


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

    @classmethod
    def load(cls, settings: Settings | None = None) -> Generator:
        """The configured generator (settings.generator), converted into settings.models_dir if GGUF."""
        settings = settings or Settings()
        model, tokenizer, name = load_causal_lm(settings.generator, settings.models_dir, settings.device)
        return cls(model, tokenizer, name=name, max_new_tokens=settings.max_new_tokens,
                   max_context_tokens=settings.max_context_tokens)

    # ---- prompt

    def check_lengths(self, question: str, answer: str | None = None, context: str | None = None) -> None:
        """BadInput for text that would not fit the decoder's budget; a given context stands in for
        retrieved chunks, so it gets their budget. Reads only the tokenizer: safe on any thread."""
        limits = {
            "question": (question, MAX_QUESTION_TOKENS),
            "answer": (answer, MAX_ANSWER_TOKENS),
            "context": (context, self.max_context_tokens),
        }
        for field, (text, limit) in limits.items():
            n = len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0
            if n > limit:
                raise BadInput(f"the {field} is {n:,} tokens long; the limit is {limit:,}: shorten it")

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

        # char ranges of each chunk block and of the question inside the rendered text
        block_ranges, at = [], user_at + len(header)
        for block in blocks:
            block_ranges.append((at, at + len(block)))
            at += len(block) + 2
        question_at = user_at + len(user) - len(question)

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
            prefix_len=self._prefix_len(text, ids),
        )

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
            self.model(input_ids=torch.tensor([ids], device=self.device), past_key_values=cache,
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

    def _new_cache(self, prompt: Prompt) -> DynamicCache:
        """A per-request cache holding the prefix. update() concatenates into new tensors, so the
        shared prefix tensors are never written: safe for concurrent requests."""
        cache = DynamicCache(config=self.model.config)
        if prompt.prefix_len and self._prefix is not None:
            for layer, (k, v) in enumerate(self._prefix.kv):
                cache.update(k, v, layer)
        return cache

    # ---- decoding

    def _membership(self, prompt: Prompt, n_answer: int) -> torch.Tensor:
        """(P + n_answer, S) one-hot segment membership of every position the answer may attend to."""
        segments = torch.tensor(prompt.segments + [GENERATED] * n_answer, device=self.device)
        return torch.nn.functional.one_hot(segments, prompt.n_segments).float()

    def _forward(self, ids: torch.Tensor, cache: DynamicCache, reducer: AttentionReducer) -> torch.Tensor:
        out = self.model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1,
                         attention_reducer=reducer)
        return out.logits[0, -1]  # (V,)

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
        prompt = self.build_prompt(question, sources)
        if not use_prefix_cache:
            prompt = replace(prompt, prefix_len=0)
        n_new = max_new_tokens or self.max_new_tokens
        reducer = AttentionReducer(self._membership(prompt, n_new))
        features = torch.zeros(n_new, self.n_layers, self.n_heads, prompt.n_segments, device=self.device)
        stream = _TextStream(self.tokenizer, self.stop_strings)

        # prefill: the last prompt position's attention is the first answer token's
        t0 = time.perf_counter()
        cache = self._new_cache(prompt)
        ids = torch.tensor([prompt.token_ids[prompt.prefix_len:]], device=self.device)
        reducer.target(slice(-1, None), features[0:1])
        next_id = self._forward(ids, cache, reducer).argmax().view(1, 1)
        self._check_reduced(reducer)
        token = int(next_id)
        t1 = time.perf_counter()

        stop_reason = "length"
        for step in range(n_new):
            if token in self.eos_ids:
                stop_reason = "eos"
                break
            piece = stream.push(token)
            if on_token is not None and piece:
                on_token(piece)
            if stream.stopped:
                stop_reason = "stop_string"
                break
            if step + 1 == n_new:
                break
            reducer.target(slice(None), features[step + 1 : step + 2])
            next_id = self._forward(next_id, cache, reducer).argmax().view(1, 1)
            token = int(next_id)
        tail = stream.finish()
        if on_token is not None and tail:
            on_token(tail)
        t2 = time.perf_counter()

        text, token_ids, offsets = stream.result()
        return Generation(
            text=text,
            token_ids=token_ids,
            offsets=offsets,
            features=features[: len(token_ids)].cpu(),
            prompt=prompt,
            stop_reason=stop_reason,
            prefill_ms=(t1 - t0) * 1000,
            decode_ms=(t2 - t1) * 1000,
        )

    @torch.inference_mode()
    def teacher_force(self, question: str, sources: Sequence[Source], answer_text: str) -> Generation:
        """The same attention masses for an answer written elsewhere, from ONE forward pass over
        prompt + answer: the query at position p predicts token p+1, exactly as in decoding."""
        prompt = self.build_prompt(question, sources)
        enc = self.tokenizer(answer_text, add_special_tokens=False, return_offsets_mapping=True)
        answer_ids: list[int] = enc["input_ids"]
        offsets = [(int(s), int(e)) for s, e in enc["offset_mapping"]]
        T, P, start = len(answer_ids), len(prompt.token_ids), prompt.prefix_len
        reducer = AttentionReducer(self._membership(prompt, T))
        features = torch.zeros(T, self.n_layers, self.n_heads, prompt.n_segments, device=self.device)

        t0 = time.perf_counter()
        if T:
            cache = self._new_cache(prompt)
            ids = torch.tensor([prompt.token_ids[start:] + answer_ids[:-1]], device=self.device)
            reducer.target(slice(P - 1 - start, P - 1 - start + T), features)
            self._forward(ids, cache, reducer)
            self._check_reduced(reducer)
        return Generation(
            text=answer_text,
            token_ids=answer_ids,
            offsets=offsets,
            features=features.cpu(),
            prompt=prompt,
            stop_reason="teacher_forced",
            prefill_ms=(time.perf_counter() - t0) * 1000,
            decode_ms=0.0,
        )
