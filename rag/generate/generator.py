"""Answer generation that shows its work: greedy decoding over the retrieved chunks which, in the same
forward pass, records how much each generated token attended to each part of the prompt.

Follow one token: `Generator.generate` builds a `Prompt` (`rag.generate.prompt`: instruction, chunks [1]..[k],
question; every token labelled with the segment it belongs to), reuses the instruction prefix's KV
cache, and decodes greedily. Each forward pass runs `rag.generate.attention.segment_attention`, which keeps
only per-segment attention masses, a (tokens, layers, heads, segments) tensor, never the attention maps;
each step also keeps the log-probability of the chosen token (`rag.generate.decoding`).
`rag.attribute.attribution` turns them into chunk shares, lookback ratios and risks.

References: Lookback Lens (Chuang et al., 2024, arXiv:2407.07071) for the lookback ratio;
"Efficient Streaming Language Models with Attention Sinks" (Xiao et al., 2023) for why the first
token is reported apart.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import torch
from transformers import DynamicCache

from rag.config import Settings
from rag.generate.attention import ATTENTION, GENERATED, AttentionReducer
from rag.generate.decoding import Decoding, Generation
from rag.generate.kvcache import KV, ChunkKVCache, KVDisk, model_folder, rope_of, shift_keys
from rag.generate.prompt import DECLINE_TEXT, INSTRUCTION_TEXT, Prompt, PromptBuilder
from rag.generate.textstream import TextStream
from rag.generate.weights import load_causal_lm
from rag.inputs import MAX_ANSWER_TOKENS, MAX_QUESTION_TOKENS
from rag.types import Source

# Tokens that end a turn in common chat templates; the model's own EOS ids are always used too.
END_OF_TURN_TOKENS = ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|endoftext|>", "</s>")
# Tokens of a prompt beyond its prefix, chunks and question: "Sources:", "Question:", role markers
TEMPLATE_GLUE_TOKENS = 64
# A base model (no chat template) does not stop by itself: it would write the next question.
BASE_MODEL_STOP_STRINGS = ("\nQuestion:", "\nSources:", "\n\n\n")


def check_attention_window(config: Any, name: str, longest: int) -> None:
    """ValueError for a model whose sliding-window layers (Gemma 2 and 3, Qwen with
    use_sliding_window) would drop keys of a prompt and answer `longest` tokens long: those layers
    could not report where a token looked, and attribution would be wrong (or fail on the shapes)."""
    layer_types = getattr(config, "layer_types", None) or []
    window = getattr(config, "sliding_window", None)
    if "sliding_attention" in layer_types and window is not None and window < longest:
        raise ValueError(
            f"model {name} attends through a {window}-token sliding window in "
            f"{layer_types.count('sliding_attention')} of {len(layer_types)} layers, and a prompt with its "
            f"answer may reach {longest} tokens: attribution needs every layer to see all of them; choose a "
            "model with full attention in every layer, or a window that long"
        )


class Generator:
    """A causal LM that answers from numbered sources and reports where it looked while answering."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        settings: Settings,
        *,
        name: str = "",
        instruction: str = INSTRUCTION_TEXT,
        stop_strings: Sequence[str] | None = None,
        kv_disk: Path | None = None,
    ) -> None:
        """Decoding budgets and prefill from ``settings`` (max_new_tokens, max_context_tokens,
        prefill, kv_cache_mb, kv_disk_mb); ``kv_disk``: the folder of the chunk KV's disk tier."""
        max_new_tokens, max_context_tokens = settings.max_new_tokens, settings.max_context_tokens
        prefill = settings.prefill
        self.prompts = PromptBuilder(tokenizer, instruction=instruction,
                                     max_context_tokens=max_context_tokens, parallel=prefill == "parallel")
        if model.config._attn_implementation != ATTENTION:
            model.set_attn_implementation(ATTENTION)
        self.model, self.tokenizer = model.eval(), tokenizer
        self.name = name or getattr(model.config, "_name_or_path", "") or type(model).__name__
        self.max_new_tokens = max_new_tokens
        default_stops = () if self.prompts.has_template else BASE_MODEL_STOP_STRINGS
        self.stop_strings = tuple(stop_strings) if stop_strings is not None else default_stops
        self.eos_ids = self._eos_ids()
        # the token a decline starts with, as the answer's first token (rag.generate.decoding.Generation)
        self.decline_id: int = tokenizer(DECLINE_TEXT, add_special_tokens=False)["input_ids"][0]
        config = model.config.get_text_config()
        prefix = self.prompts.prefix
        longest = ((len(prefix.token_ids) if prefix else 0) + max_context_tokens + MAX_QUESTION_TOKENS
                   + TEMPLATE_GLUE_TOKENS + max(max_new_tokens, MAX_ANSWER_TOKENS))
        check_attention_window(config, self.name, longest)
        self.n_layers: int = config.num_hidden_layers
        self.n_heads: int = config.num_attention_heads
        self.device = next(model.parameters()).device
        self._prefix_kv = self._run_prefix()
        self._rotary = rope_of(model)
        if prefill == "parallel" and (self._rotary is None or self._prefix_kv is None):
            raise ValueError(f"parallel prefill needs plain RoPE and a chat prefix; {self.name} has not both")
        self.prefill = prefill
        disk = None
        prefix = self.prompts.prefix
        if prefill == "parallel" and kv_disk is not None and prefix is not None:
            folder = kv_disk / model_folder(self.name, model, prefix.token_ids)
            disk = KVDisk.open(folder, settings.kv_disk_mb << 20, self.device)
        self.chunk_kv = ChunkKVCache(settings.kv_cache_mb << 20, disk)

    @classmethod
    def load(cls, settings: Settings | None = None) -> Generator:
        """The configured generator (settings.generator), converted into settings.models_dir if GGUF."""
        settings = settings or Settings()
        quantize = settings.quantize if settings.device == "cpu" else "none"
        model, tokenizer, name = load_causal_lm(settings.generator, settings.models_dir, settings.device,
                                                quantize)
        return cls(model, tokenizer, settings, name=name, kv_disk=settings.home_dir / "kv")

    def check_lengths(self, question: str, answer: str | None = None, context: str | None = None) -> None:
        """BadInput for text that would not fit the decoder's budget (`PromptBuilder.check_lengths`).
        Reads only the tokenizer: safe on any thread."""
        self.prompts.check_lengths(question, answer, context)

    def _eos_ids(self) -> frozenset[int]:
        ids: set[int] = set()
        for eos in (self.model.generation_config.eos_token_id, self.tokenizer.eos_token_id):
            if eos is not None:
                ids.update(eos if isinstance(eos, list) else [eos])
        vocab = self.tokenizer.get_vocab()
        ids.update(vocab[t] for t in END_OF_TURN_TOKENS if t in vocab and self.prompts.has_template)
        return frozenset(ids)

    # ---- KV caches

    def _run_prefix(self) -> KV | None:
        """Run the instruction prefix once; every request then starts from a copy of its KV."""
        prefix = self.prompts.prefix
        if prefix is None:
            return None
        cache = DynamicCache(config=self.model.config)
        with torch.inference_mode():
            self.model(input_ids=torch.tensor([prefix.token_ids], device=self.device), cache=cache,
                       use_cache=True, logits_to_keep=1)
        layers: list[Any] = list(cache.layers)
        return tuple((layer.keys, layer.values) for layer in layers)

    def cache_of(self, kv: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> DynamicCache:
        """A cache holding these per-layer keys and values. update() concatenates into new tensors, so
        the given ones are never written: a shared prefix or batch stays intact."""
        cache = DynamicCache(config=self.model.config)
        for layer, (k, v) in enumerate(kv):
            cache.update(k, v, layer)
        return cache

    def _new_cache(self, prompt: Prompt) -> DynamicCache:
        """A per-request cache holding the prefix (never written: safe for concurrent requests)."""
        prefix = self._prefix_kv if prompt.prefix_len else None
        return self.cache_of(prefix if prefix is not None else ())

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
        assert self._prefix_kv is not None and self.prompts.prefix is not None
        cache = self.cache_of(self._prefix_kv)
        self.model(input_ids=torch.tensor([ids], device=self.device), cache=cache, use_cache=True,
                   logits_to_keep=1)
        n = len(self.prompts.prefix.token_ids)
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
        one token per forward (`Generator.generate` alone, `rag.generate.batching` with other requests)."""
        decoding, logits = self.prefill_logits(question, sources, max_new_tokens=max_new_tokens,
                                      use_prefix_cache=use_prefix_cache)
        decoding.accept(logits)
        return decoding

    @torch.inference_mode()
    def prefill_logits(
        self,
        question: str,
        sources: Sequence[Source],
        *,
        max_new_tokens: int | None = None,
        use_prefix_cache: bool = True,
    ) -> tuple[Decoding, torch.Tensor]:
        """`start` before its first token is chosen: the decoding and the first token's logits (V,),
        for callers that choose tokens otherwise (`rag.answer.guided` samples them)."""
        prompt = self.prompts.build(question, sources)
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
                            TextStream(self.tokenizer, self.stop_strings), self.eos_ids, encoded, t0,
                            self.decline_id)
        decoding.prefill_ms = (time.perf_counter() - t0) * 1000
        return decoding, logits

    @torch.inference_mode()
    def complete(self, instruction: str, user: str, reply_start: str = "", max_new_tokens: int = 48) -> str:
        """A plain greedy chat turn, no sources and no attention kept: for the short side tasks the
        generator also does (writing a calibration question, rewriting a follow-up). ``reply_start``
        is written as the reply's first words, which holds a small model to the form asked for."""
        if self.prompts.has_template:
            messages = [{"role": "system", "content": instruction}, {"role": "user", "content": user}]
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:
            text = f"{instruction}\n\n{user}\n"
        text += reply_start
        ids = self.tokenizer(text, add_special_tokens=not self.prompts.has_template,
                             return_tensors="pt")["input_ids"].to(self.device)
        out = self.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                  do_sample=False, eos_token_id=sorted(self.eos_ids),
                                  pad_token_id=self.tokenizer.pad_token_id or min(self.eos_ids))
        reply = reply_start + self.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
        for stop in self.stop_strings:
            reply = reply.split(stop)[0]
        return reply.strip()

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
        prompt = self.prompts.build(question, sources)
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
            decline = 0.0
            if T:
                cache = self.cache_of(kv)
                reducer = self._reducer(prompt, T)
                reducer.target(slice(0, T), features, token_masses)
                inputs = torch.tensor([[prompt.token_ids[P - 1], *ids[:-1]]], device=self.device)
                logits = self._forward(inputs, cache, reducer, keep=T).view(T, -1)  # (T, V)
                self._check_reduced(reducer)
                logp = torch.log_softmax(logits.float(), -1)
                logprobs = logp[torch.arange(T), ids].tolist()
                decline = float(logp[0, self.decline_id])
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
                    decline_logprob=decline,
                )
            )
        return out
