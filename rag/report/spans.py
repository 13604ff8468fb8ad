"""Where the report's highlights fall: each sentence's evidence (the source spans its tokens attended
to most), quotes copied verbatim from a source, and for answers stored before evidence existed a
word-overlap guess at the passage each citation points to. Positions are char ranges of a chunk's
text; `rag.report.view` cuts the texts at them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rag.text import CITATION, STOPWORDS, split_sentences, words
from rag.types import Answer, Source

_QUOTE = re.compile(r"“([^”]+)”\s*\[(\d+)\]")  # rag.answer.pipeline.quote_answer: “text” [n]


@dataclass(frozen=True)
class Span:
    """A highlighted range of a chunk's text: ``ev`` (a sentence's evidence, with its mass), ``quote``
    (quoted verbatim in the answer) or ``span`` (the word-overlap guess for answers without evidence)."""

    start: int
    end: int
    kind: str
    sentence: int | None = None
    mass: float = 0.0


def citations(text: str) -> list[int]:
    """The source numbers cited as [n] / [n, m] in a piece of text, in order, without repeats."""
    seen: list[int] = []
    for m in CITATION.finditer(text):
        for part in re.split(r"[,;]", m.group(1)):
            n = int(part)
            if n not in seen:
                seen.append(n)
    return seen


def _content_words(text: str) -> set[str]:
    return {w for w in words(CITATION.sub(" ", text)) if (len(w) >= 3 if w.isdigit() else w not in STOPWORDS)}


def _best_span(chunk: str, sentence: str) -> tuple[int, int] | None:
    """Char span of the chunk's passage (a sentence or line) sharing the most content words with the
    citing sentence; None when nothing shares at least one real word (or two short ones)."""
    wanted = _content_words(sentence)
    if not wanted:
        return None
    best: tuple[float, int, int] | None = None
    for start, end in split_sentences(chunk):
        shared = wanted & _content_words(chunk[start:end])
        score = sum(1.0 if len(w) >= 4 else 0.5 for w in shared)
        if score >= 1 and (best is None or score > best[0]):
            best = (score, start, end)
    return (best[1], best[2]) if best else None


def _locate(text: str, src: Source, char_start: int | None = None) -> tuple[int, int] | None:
    """Where ``text`` lies in ``src.text``: at its document offset when that holds, else its first
    occurrence (a stale offset); None when the chunk does not hold it."""
    if not text:
        return None
    if char_start is not None:
        at = char_start - src.char_start
        if at >= 0 and src.text[at : at + len(text)] == text:
            return at, at + len(text)
    at = src.text.find(text)
    return (at, at + len(text)) if at >= 0 else None


def card_of(sources: list[Source], chunk_id: int) -> int | None:
    """The card number (1-based, in ``sources`` order) of a chunk, None when it is not a source."""
    return next((n for n, s in enumerate(sources, 1) if s.chunk_id == chunk_id), None)


def place_spans(
    answer: Answer, sources: list[Source], *, evidence_mode: bool, quotes: bool
) -> dict[int, list[Span]]:
    """The spans to highlight in each source, by card number: each sentence's evidence (or, for an
    answer without evidence, the guessed passage of each source it cites), then the quotes."""
    placed: dict[int, list[Span]] = {n: [] for n in range(1, len(sources) + 1)}
    for i, s in enumerate(answer.sentences):
        if evidence_mode:
            for ev in s.evidence:
                n = card_of(sources, ev.chunk_id)
                at = _locate(ev.text, sources[n - 1], ev.char_start) if n else None
                if n is not None and at is not None:
                    placed[n].append(Span(at[0], at[1], "ev", i, min(max(ev.mass, 0.0), 1.0)))
            continue
        for n in citations(s.text):
            if 1 <= n <= len(sources):
                span = _best_span(sources[n - 1].text, s.text)
                if span is not None:
                    placed[n].append(Span(span[0], span[1], "span", i))
    if quotes:
        for m in _QUOTE.finditer(answer.answer):
            n = int(m.group(2))
            if 1 <= n <= len(sources) and (at := _locate(m.group(1), sources[n - 1])):
                placed[n].append(Span(at[0], at[1], "quote"))
    return placed
