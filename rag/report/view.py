"""What the attribution report shows, computed from an Answer: the answer cut into sentences and
citation links, the sources as cards with their highlighted pieces, a side-panel row per sentence with
its head grid, the timing bar, and the data the page's script reads. `rag.report.html` renders it; the
template (templates/report.html) reads it as ``v``, and the formatting helpers as globals.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rag.report.spans import Span, card_of, citations, place_spans
from rag.text import CITATION
from rag.types import Answer, SentenceAttribution, Source

CLAMP_CHARS = 520  # chunk texts longer than this start collapsed (the script adds the toggle)
KINDS = ("generated", "quotes", "refusal")


def risk_hue(risk: float, threshold: float) -> int:
    """Hue of the green → amber → red scale: green at 0, amber at the threshold, red at 1."""
    risk = min(max(float(risk), 0.0), 1.0) if math.isfinite(risk) else 1.0
    t = min(max(float(threshold), 0.01), 0.99) if math.isfinite(threshold) else 0.5
    if risk < t:
        return round(140 - 100 * risk / t)
    return round(40 - 40 * (risk - t) / (1 - t))


def risk_level(risk: float, flagged: bool, threshold: float) -> str:
    """``high`` for flagged sentences, ``mid`` from half the threshold up, else ``low``."""
    if flagged:
        return "high"
    return "mid" if risk >= threshold / 2 else "low"


def format_share(share: float | None) -> str:
    """A share in [0, 1] as a percentage: whole percents, one decimal below 1%, an em dash for None."""
    if share is None or not math.isfinite(share):
        return "—"
    pct = share * 100
    if pct == 0:
        return "0%"
    return f"{pct:.1f}%" if pct < 1 else f"{pct:.0f}%"


def format_ms(ms: float) -> str:
    """Milliseconds for people: ``12 ms``, ``2.31 s``."""
    return f"{ms:.0f} ms" if ms < 1000 else f"{ms / 1000:.2f} s"


def format_time(created_at: str) -> str:
    """An ISO timestamp as ``2025-01-31 14:05:09 UTC``; anything unparseable as given."""
    try:
        when = datetime.fromisoformat(created_at)
    except ValueError:
        return created_at
    if when.tzinfo is not None:
        return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return when.strftime("%Y-%m-%d %H:%M:%S")


def _split_path(path: str) -> tuple[str, str]:
    """(folder with trailing separator, file name) of a POSIX or Windows path."""
    cut = max(path.rfind("/"), path.rfind("\\"))
    return path[: cut + 1], path[cut + 1 :]


def _clip01(x: float) -> float:
    return min(max(x, 0.0), 1.0)


# ---- answer text: sentences and citations


def _cited(text: str) -> list[str | list[int]]:
    """Text cut into plain strings and citation groups ([n, m] → [n, m]); the template links them."""
    out: list[str | list[int]] = []
    at = 0
    for m in CITATION.finditer(text):
        out += [text[at : m.start()], [int(p) for p in re.split(r"[,;]", m.group(1))]]
        at = m.end()
    out.append(text[at:])
    return out


def _segments(answer: Answer) -> list[tuple[str, int | None]]:
    """The answer text cut into (text, sentence index or None) pieces, in order.

    Uses the sentences' char offsets when they are consistent with the answer text; otherwise (offsets
    out of range, overlapping, or pointing at other text) falls back to the sentences' own texts."""
    text, sents = answer.answer, answer.sentences
    if not sents:
        return [(text, None)]
    at = 0
    for s in sents:
        if not (at <= s.start <= s.end <= len(text)) or text[s.start : s.end].strip() != s.text.strip():
            pieces: list[tuple[str, int | None]] = []
            for i, s2 in enumerate(sents):
                pieces += [(" ", None)] if i else []
                pieces.append((s2.text, i))
            return pieces
        at = s.end
    pieces = []
    at = 0
    for i, s in enumerate(sents):
        if s.start > at:
            pieces.append((text[at : s.start], None))
        pieces.append((text[s.start : s.end], i))
        at = s.end
    if at < len(text):
        pieces.append((text[at:], None))
    return pieces


# ---- chunk text cut at the highlights


@dataclass
class _Piece:
    """A run of chunk text under the same set of spans (one <mark>, or plain text)."""

    text: str
    kind: str = ""
    sentences: list[int] = field(default_factory=list)
    masses: list[float] = field(default_factory=list)

    @property
    def data_s(self) -> str:
        return " ".join(str(i) for i in self.sentences)

    @property
    def data_m(self) -> str:
        return " ".join(f"{m:.3f}" for m in self.masses)

    @property
    def rest(self) -> str:
        """The tint with no sentence selected: the strongest of the sentences' masses here."""
        return f"{max(self.masses, default=0.0):.3f}"

    @property
    def title(self) -> str:
        if self.kind == "quote":
            return "quoted verbatim in the answer"
        if self.kind == "span":
            return "cited by " + ", ".join(f"S{i + 1}" for i in self.sentences)
        parts = (f"S{i + 1} ({format_share(m)})" for i, m in zip(self.sentences, self.masses, strict=True))
        return "evidence for " + ", ".join(parts) + " · share of the sentence's attention on the sources"


def _pieces(text: str, spans: list[Span]) -> list[_Piece]:
    """The chunk text cut at every span edge; each run carries the spans covering it (evidence wins
    over quotes over the word-overlap guess where they meet)."""
    if not spans:
        return [_Piece(text)]
    cuts = sorted({0, len(text)} | {p for s in spans for p in (s.start, s.end)})
    out: list[_Piece] = []
    for lo, hi in itertools.pairwise(cuts):
        if lo >= hi:
            continue
        over = [s for s in spans if s.start <= lo and hi <= s.end]
        kind = next((k for k in ("ev", "quote", "span") if any(s.kind == k for s in over)), "")
        mine = sorted((s.sentence, s.mass) for s in over if s.kind == kind and s.sentence is not None)
        out.append(_Piece(text[lo:hi], kind, [i for i, _ in mine], [m for _, m in mine]))
    return out


# ---- the page's view of an answer


@dataclass
class _Card:
    n: int
    src: Source
    folder: str
    name: str
    show_title: bool
    loc: list[str]
    cited_by: list[tuple[int, bool]]  # (sentence, has a highlight here)
    evidence_for: list[tuple[int, float]]  # (sentence, its evidence mass here)
    pieces: list[_Piece]
    heuristic: bool  # its marks are the word-overlap guess
    quoted: bool
    width: float
    long: bool


@dataclass
class _Row:
    """A sentence in the side panel: risk, lookback, top source, evidence and its head grid."""

    i: int
    s: SentenceAttribution
    level: str
    hue: int
    top: tuple[int, str] | None  # (card number, share)
    evidence: list[tuple[int | None, str, str]]  # (card number or None, mass, excerpt)
    heads: list[list[float]]  # (L, H), empty when not stored
    top_heads: str


def _head_grid(heads: list[list[float]]) -> list[list[float]]:
    """The (layers × heads) lookback grid, or [] when it is missing or ragged."""
    if not heads or not heads[0] or any(len(row) != len(heads[0]) for row in heads):
        return []
    return [[_clip01(float(v)) if math.isfinite(v) else 0.0 for v in row] for row in heads]


def _top_heads(grid: list[list[float]], k: int = 3) -> str:
    cells = sorted(((v, layer, h) for layer, row in enumerate(grid) for h, v in enumerate(row)), reverse=True)
    mean = sum(v for v, _, _ in cells) / len(cells)
    top = ", ".join(f"L{layer}·H{h} {v:.2f}" for v, layer, h in cells[:k])
    return f"highest {top} · mean {mean:.2f}"


def head_colour(v: float) -> str:
    """Diverging scale around 0.5: orange where a head looked at the answer itself, blue where it
    looked back at the sources; the further from even, the stronger."""
    hue = 212 if v >= 0.5 else 24
    return f"hsl({hue} 85% 48% / {0.06 + 0.94 * min(abs(v - 0.5) * 2, 1.0):.2f})"


def _excerpt(text: str, limit: int = 110) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


class View:
    """What the template reads: the answer, its sources in card order, rows and cards."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.sources = sorted(answer.sources, key=lambda s: s.rank)
        self.threshold = answer.hallucination.threshold
        kind = answer.answer_kind if answer.answer_kind in KINDS else "generated"
        self.kind = "refusal" if kind == "generated" and answer.abstained else kind
        # why quotes stand in for the draft: it gave no answer beyond naming a source, or its risk
        self.named_a_source = self.kind == "quotes" and answer.held_back == "names_a_source"
        self.evidence_mode = any(s.evidence for s in answer.sentences)
        self.placed = place_spans(answer, self.sources, evidence_mode=self.evidence_mode,
                                  quotes=self.kind == "quotes")

    def _card_of(self, chunk_id: int) -> int | None:
        return card_of(self.sources, chunk_id)

    def support(self, s: SentenceAttribution) -> list[float]:
        """The sentence's support per source, in card order (missing chunk ids count as 0)."""
        return [float(s.support.get(src.chunk_id, 0.0)) for src in self.sources]

    def level(self, risk: float, flagged: bool) -> str:
        return risk_level(risk, flagged, self.threshold)

    def hue(self, risk: float) -> int:
        return risk_hue(risk, self.threshold)

    def segments(self) -> list[tuple[list[str | list[int]], int | None]]:
        return [(_cited(text), i) for text, i in _segments(self.answer)]

    def cited(self, text: str) -> list[str | list[int]]:
        return _cited(text)

    def rows(self) -> list[_Row]:
        rows = []
        for i, s in enumerate(self.answer.sentences):
            support = self.support(s)
            top = None
            if support and max(support) > 0:
                k = max(range(len(support)), key=support.__getitem__)
                top = (k + 1, format_share(support[k]))
            evidence = [
                (self._card_of(ev.chunk_id), format_share(ev.mass), _excerpt(ev.text)) for ev in s.evidence
            ]
            grid = _head_grid(s.heads)
            rows.append(_Row(i, s, self.level(s.risk, s.flagged), self.hue(s.risk), top, evidence, grid,
                             _top_heads(grid) if grid else ""))  # fmt: skip
        return rows

    def cards(self) -> list[_Card]:
        cards = []
        for n, src in enumerate(self.sources, 1):
            folder, name = _split_path(src.path)
            title = src.title.strip()
            loc = ([f"p. {src.page}"] if src.page is not None else []) + (
                [f"§ {src.heading}"] if src.heading else []
            )
            spans = self.placed[n]
            lit = {s.sentence for s in spans}
            cited_by = [(i, i in lit) for i, s in enumerate(self.answer.sentences) if n in citations(s.text)]
            by_sentence: dict[int, float] = {}
            for sp in spans:
                if sp.kind == "ev" and sp.sentence is not None:
                    by_sentence[sp.sentence] = by_sentence.get(sp.sentence, 0.0) + sp.mass
            mass = src.attention_mass
            cards.append(
                _Card(
                    n=n,
                    src=src,
                    folder=folder,
                    name=name or src.path,
                    show_title=bool(title) and title != name,
                    loc=loc,
                    cited_by=cited_by,
                    evidence_for=sorted(by_sentence.items()),
                    pieces=_pieces(src.text, spans),
                    heuristic=any(sp.kind == "span" for sp in spans),
                    quoted=any(sp.kind == "quote" for sp in spans),
                    width=0.0 if mass is None else 100 * _clip01(mass),
                    long=len(src.text) > CLAMP_CHARS,
                )
            )
        return cards

    def timings(self) -> tuple[list[tuple[str, float, float]], float]:
        """(name, ms, percent of the bar) per phase, and the total."""
        t = self.answer.timings
        parts = [("retrieve", t.retrieve_ms), ("prefill", t.prefill_ms), ("decode", t.decode_ms),
                 ("attribute", t.attribute_ms)]  # fmt: skip
        total = t.total_ms or sum(ms for _, ms in parts)
        return [(name, ms, 100 * ms / total if total > 0 else 0.0) for name, ms in parts], t.total_ms

    def script_data(self) -> dict[str, Any]:
        """What the page's script reads: per sentence its scores, citations and evidence spans."""
        sentences = []
        for i, s in enumerate(self.answer.sentences):
            evidence = [
                {"n": n, "start": sp.start, "end": sp.end, "mass": sp.mass}
                for n, spans in self.placed.items()
                for sp in spans
                if sp.kind == "ev" and sp.sentence == i
            ]
            sentences.append({
                "risk": s.risk,
                "lookback": s.lookback,
                "flagged": s.flagged,
                "support": self.support(s),
                "cites": [n for n in citations(s.text) if 1 <= n <= len(self.sources)],
                "evidence": evidence,
            })
        return {
            "threshold": self.threshold,
            "kind": self.kind,
            "sources": [{"n": n, "chunk_id": s.chunk_id} for n, s in enumerate(self.sources, 1)],
            "sentences": sentences,
        }
