"""Streaming detokenization of an answer: what is safe to show as tokens arrive."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any


class TextStream:
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

    def copy(self) -> TextStream:
        """An independent stream in the same state (a branch that may be dropped)."""
        twin = copy.copy(self)
        twin.ids, twin.ends = list(self.ids), list(self.ends)
        return twin

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
