"""The prompt a `Generator` answers from: instruction, numbered sources [1]..[k] and question, rendered
with the model's chat template and tokenized so that every token is labelled with the segment it
belongs to (`rag.generate.attention`'s SINK, INSTRUCTION, QUESTION, FIRST_CHUNK + i). Attribution reads those
labels; the generator reuses the instruction prefix's keys and values wherever the prompt splits
there at a token boundary, and in parallel prefill encodes each chunk unit on its own.

Only the tokenizer is read here, never the model: prompts can be built and measured on any thread.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag.generate.attention import FIRST_CHUNK, INSTRUCTION, QUESTION, SINK
from rag.generate.kvcache import UnitKey
from rag.inputs import (
    MAX_ANSWER_CHARS,
    MAX_ANSWER_TOKENS,
    MAX_CONTEXT_CHARS,
    MAX_QUESTION_CHARS,
    MAX_QUESTION_TOKENS,
)
from rag.types import BadInput, Source

# Short answers: on SQuAD questions a 0.5B model asked for "one short sentence" copied the answer
# instead of paraphrasing the paragraph around it, and said "I don't know" where a longer
# instruction made it guess. Longer variants tried and dropped: docs/history.md#prompt-instruction.
DECLINE_TEXT = "I don't know."  # the reply asked for when the sources lack the answer
INSTRUCTION_TEXT = (
    "Answer the question using only the numbered sources. Reply with one short sentence that cites "
    f"its source as [n]. If the sources do not contain the answer, reply: {DECLINE_TEXT}"
)


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


@dataclass(frozen=True)
class Prefix:
    """The instruction prefix every prompt starts with: its text and tokens (the generator runs them
    once and every request starts from a copy of their keys and values)."""

    text: str
    token_ids: list[int]


class PromptBuilder:
    """Renders and tokenizes prompts for one tokenizer, instruction and context budget."""

    def __init__(
        self, tokenizer: Any, *, instruction: str = INSTRUCTION_TEXT, max_context_tokens: int,
        parallel: bool = False,
    ) -> None:
        if not tokenizer.is_fast:
            raise ValueError("the generator needs a fast tokenizer (offset mappings locate each chunk)")
        self.tokenizer = tokenizer
        self.instruction = instruction
        self.max_context_tokens = max_context_tokens
        self.parallel = parallel  # tokenize chunk units apart (parallel prefill)
        self.has_template = bool(getattr(tokenizer, "chat_template", None))
        self.prefix = self._find_prefix()

    def check_lengths(self, question: str, answer: str | None = None, context: str | None = None) -> None:
        """BadInput for text that would not fit the decoder's budget; a given context stands in for
        retrieved chunks, so it gets their budget."""
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

    def encode(self, text: str, whole: bool = True) -> tuple[list[int], list[tuple[int, int]]]:
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

    def build(self, question: str, sources: Sequence[Source]) -> Prompt:
        """Render instruction, sources [1]..[k] and question, and label every token with its segment.

        Sources are kept in rank order while their tokens fit max_context_tokens (the first always)."""
        blocks: list[str] = []
        kept: list[Source] = []
        budget = self.max_context_tokens
        for source in sources:
            block = self._source_block(len(blocks) + 1, source)
            cost = len(self.encode(block, whole=False)[0])
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
        if self.parallel and blocks:
            ids, offsets, units = self._encode_units(text, user_at, block_ranges, kept)
        else:
            ids, offsets = self.encode(text)
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
            prefix_len=len(self.prefix.token_ids) if units and self.prefix else self.prefix_len(text, ids),
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
        ids, offsets = self.encode(text[:user_at])
        texts = {source.chunk_id: source.text for source in kept}
        units = []
        for start, end, chunk_id in [*cuts, (at, len(text), None)]:
            piece_ids, piece_offsets = self.encode(text[start:end], whole=False)
            if end != len(text):
                key = UnitKey.of(chunk_id, piece_ids, "" if chunk_id is None else texts[chunk_id])
                units.append((key, len(ids), len(ids) + len(piece_ids)))
            ids += piece_ids
            offsets += [(s + start, e + start) for s, e in piece_offsets]
        return ids, offsets, tuple(units)

    # ---- the shared prefix

    def _find_prefix(self) -> Prefix | None:
        """The part of every rendered prompt before the per-request content (None: no tokens)."""
        text, _, user_at = self._render("Sources:\n[1] x\ny\n\nQuestion: z")
        prefix = text[:user_at]
        ids, _ = self.encode(prefix)
        return Prefix(text=prefix, token_ids=ids) if ids else None

    def prefix_len(self, text: str, ids: list[int]) -> int:
        """How many leading tokens the shared cache covers: all of the prefix, or none when the prompt
        does not split there at a token boundary (prefix + rest must tokenize as the whole does)."""
        p = self.prefix
        if p is None or not text.startswith(p.text):
            return 0
        n = len(p.token_ids)
        rest, _ = self.encode(text[len(p.text):], whole=False)
        return n if ids[:n] == p.token_ids and ids[n:] == rest else 0
