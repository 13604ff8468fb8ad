"""The attribution report: one self-contained HTML page for an Answer (`rag report ID --html FILE`).

The page needs nothing but itself: inline CSS, a little vanilla JS, no external resources. Every piece of
user content (question, answer, chunk text, paths, titles, model names) is HTML-escaped here; the data the
script reads is embedded as JSON with ``<``, ``>`` and ``&`` written as ``\\u`` escapes, and a
Content-Security-Policy admits only the page's own script (by hash), so injected markup cannot run.

Hover, focus or tap a sentence to light up the sources it attended to (proportionally to its
``support``) and the passage it cites; ``#focus=N`` (or ``?focus=N``) pre-selects sentence N on load.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import html
import itertools
import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from importlib import resources
from string import Template
from typing import Any

from rag.types import Answer, SentenceAttribution, Source

__all__ = ["format_ms", "format_share", "render_html", "risk_hue", "risk_level"]

CLAMP_CHARS = 520  # chunk texts longer than this start collapsed (the script adds the toggle)
_CITATION = re.compile(r"\[(\d+(?:\s*[,;]\s*\d+)*)\]")
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_PASSAGE = re.compile(r"[^.!?\n]+(?:[.!?]+|\n|$)")
_STOPWORD_TEXT = """
    a an and are as at be been but by can could did do does for from had has have he her his how i if in
    into is it its of on or our she so than that the their them then there these they this those to was we
    were what when where which who why will with would you your not no yes also more most other such only
    about after before over under between per via"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())


def _e(value: object) -> str:
    """HTML-escape any value (quotes included, so the result is safe in attributes too)."""
    return html.escape(str(value), quote=True)


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


def _format_time(created_at: str) -> str:
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


# ---- answer text: sentences and citations


def _citations(text: str) -> list[int]:
    """The source numbers cited as [n] / [n, m] in a piece of text, in order, without repeats."""
    seen: list[int] = []
    for m in _CITATION.finditer(text):
        for part in re.split(r"[,;]", m.group(1)):
            n = int(part)
            if n not in seen:
                seen.append(n)
    return seen


def _with_citations(text: str, n_sources: int) -> str:
    """Escape text and turn each [n] into a chip linked to source card n."""
    out: list[str] = []
    at = 0
    for m in _CITATION.finditer(text):
        out.append(_e(text[at : m.start()]))
        chips = []
        for part in re.split(r"[,;]", m.group(1)):
            n = int(part)
            if 1 <= n <= n_sources:
                chips.append(f'<a class="cite" href="#src-{n}" data-n="{n}" aria-label="source {n}">{n}</a>')
            else:
                chips.append(f'<span class="cite missing" title="no source {n} was retrieved">{n}</span>')
        out.append(f'<span class="cites">{"".join(chips)}</span>')
        at = m.end()
    out.append(_e(text[at:]))
    return "".join(out)


def _segments(answer: Answer) -> list[tuple[str, int | None]]:
    """The answer text cut into (text, sentence index or None) pieces, in order.

    Uses the sentences' char offsets when they are consistent with the answer text; otherwise (offsets
    out of range, overlapping, or pointing at other text) falls back to the sentences' own texts."""
    text, sents = answer.answer, answer.sentences
    consistent = True
    at = 0
    for s in sents:
        if not (at <= s.start <= s.end <= len(text)) or text[s.start : s.end].strip() != s.text.strip():
            consistent = False
            break
        at = s.end
    if not sents:
        return [(text, None)]
    if not consistent:
        pieces: list[tuple[str, int | None]] = []
        for i, s in enumerate(sents):
            if i:
                pieces.append((" ", None))
            pieces.append((s.text, i))
        return pieces
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


# ---- cited spans inside the chunks


def _content_words(text: str) -> set[str]:
    words = (w.lower() for w in _WORD.findall(_CITATION.sub(" ", text)))
    return {w for w in words if (len(w) >= 3 if w.isdigit() else w not in _STOPWORDS)}


def _best_span(chunk: str, sentence: str) -> tuple[int, int] | None:
    """Char span of the chunk's passage (a sentence or line) sharing the most content words with the
    citing sentence; None when nothing shares at least one real word (or two short ones)."""
    wanted = _content_words(sentence)
    if not wanted:
        return None
    best: tuple[float, int, int] | None = None
    for m in _PASSAGE.finditer(chunk):
        shared = wanted & _content_words(m.group())
        score = sum(1.0 if len(w) >= 4 else 0.5 for w in shared)
        if score >= 1 and (best is None or score > best[0]):
            lead = len(m.group()) - len(m.group().lstrip())
            tail = len(m.group().rstrip())
            best = (score, m.start() + lead, m.start() + tail)
    return (best[1], best[2]) if best else None


def _chunk_html(text: str, spans: list[tuple[int, int, int]]) -> str:
    """Escape chunk text, wrapping cited spans in <mark> tagged with the sentence indexes citing them."""
    if not spans:
        return _e(text)
    cuts = sorted({0, len(text)} | {p for s, e, _ in spans for p in (s, e)})
    out: list[str] = []
    for lo, hi in itertools.pairwise(cuts):
        if lo >= hi:
            continue
        by = sorted({i for s, e, i in spans if s <= lo and hi <= e})
        piece = _e(text[lo:hi])
        if by:
            tags = " ".join(str(i) for i in by)
            names = ", ".join(f"S{i + 1}" for i in by)
            out.append(f'<mark class="span" data-s="{tags}" title="cited by {names}">{piece}</mark>')
        else:
            out.append(piece)
    return "".join(out)


# ---- page parts


@dataclass
class _View:
    """What the page parts share: sources in citation order and the detector threshold."""

    answer: Answer
    sources: list[Source]
    threshold: float

    def support(self, s: SentenceAttribution) -> list[float]:
        """The sentence's support per source, in card order (missing chunk ids count as 0)."""
        return [float(s.support.get(src.chunk_id, 0.0)) for src in self.sources]


def _header_badge(v: _View) -> str:
    h = v.answer.hallucination
    level = risk_level(h.risk, h.flagged, v.threshold)
    status = {"high": "Flagged", "mid": "Borderline", "low": "Grounded"}[level]
    n_flagged = sum(s.flagged for s in v.answer.sentences)
    counts = (
        f"{n_flagged} of {len(v.answer.sentences)} sentence{'s' if len(v.answer.sentences) != 1 else ''}"
        " flagged"
        if v.answer.sentences
        else "no sentences scored"
    )
    return (
        f'<div class="badge risk-{level}" style="--h:{risk_hue(h.risk, v.threshold)}" '
        f'role="status" aria-label="overall hallucination risk {h.risk:.2f}, {status.lower()}">'
        f'<div class="badge-top"><span class="badge-label">Hallucination risk</span>'
        f'<span class="pill">{status}</span></div>'
        f'<div class="badge-num">{h.risk:.2f}</div>'
        f'<div class="badge-meta">threshold {h.threshold:.2f} · {counts}</div>'
        f'<div class="badge-meta method" title="detector method">{_e(h.method)}</div>'
        "</div>"
    )


def _timings(v: _View) -> str:
    t = v.answer.timings
    parts = [
        ("retrieve", t.retrieve_ms),
        ("prefill", t.prefill_ms),
        ("decode", t.decode_ms),
        ("attribute", t.attribute_ms),
    ]
    total = t.total_ms or sum(ms for _, ms in parts)
    bar = "".join(
        f'<i class="t-{name}" style="width:{100 * ms / total:.2f}%" title="{name} {format_ms(ms)}"></i>'
        for name, ms in parts
        if total > 0 and ms > 0
    )
    labels = "".join(
        f'<li><span class="dot t-{name}"></span>{name} <b>{format_ms(ms)}</b></li>' for name, ms in parts
    )
    return (
        f'<div class="timings"><div class="tbar" aria-hidden="true">{bar}</div>'
        f'<ul class="tlist">{labels}<li class="total">total <b>{format_ms(t.total_ms)}</b></li></ul></div>'
    )


def _abstained(v: _View) -> str:
    a = v.answer
    if not a.abstained:
        return ""
    draft = ""
    if a.draft:
        draft = (
            '<details class="draft"><summary>Show the held-back draft</summary>'
            f'<p class="draft-text">{_with_citations(a.draft, len(v.sources))}</p></details>'
        )
    return (
        '<div class="notice" role="note"><strong>Abstained.</strong> '
        "The system declined to answer rather than guess: the retrieved sources did not support an "
        f"answer it could stand behind.{draft}</div>"
    )


def _answer_html(v: _View) -> str:
    pieces = []
    for text, i in _segments(v.answer):
        if i is None:
            pieces.append(_with_citations(text, len(v.sources)))
            continue
        s = v.answer.sentences[i]
        level = risk_level(s.risk, s.flagged, v.threshold)
        state = f"flagged: risk ≥ {v.threshold:.2f}" if s.flagged else "not flagged"
        tip = f"Sentence {i + 1} · risk {s.risk:.2f} ({state}) · lookback {s.lookback:.2f}"
        flag = (
            '<span class="flag" aria-hidden="true">!</span><span class="sr">flagged: </span>'
            if s.flagged
            else ""
        )
        pieces.append(
            f'<span class="sent risk-{level}{" flagged" if s.flagged else ""}" data-s="{i}" '
            f'style="--h:{risk_hue(s.risk, v.threshold)}" tabindex="0" role="button" aria-pressed="false" '
            f'title="{_e(tip)}" data-risk="{s.risk:.3f}" data-lookback="{s.lookback:.3f}">'
            f"{flag}{_with_citations(text, len(v.sources))}</span>"
        )
    return "".join(pieces)


def _sentence_rows(v: _View) -> str:
    if not v.answer.sentences:
        return ""
    rows = []
    for i, s in enumerate(v.answer.sentences):
        level = risk_level(s.risk, s.flagged, v.threshold)
        support = v.support(s)
        top = max(range(len(support)), key=support.__getitem__) if support and max(support) > 0 else None
        if top is None:
            top_html = '<span class="top muted">no source support</span>'
        else:
            share = format_share(support[top])
            top_html = f'<span class="top">mostly <span class="chip">{top + 1}</span> {share}</span>'

        rows.append(
            f'<li><button type="button" class="srow risk-{level}" data-s="{i}" '
            f'style="--h:{risk_hue(s.risk, v.threshold)}" aria-pressed="false">'
            f'<span class="snum">S{i + 1}</span>'
            f'<span class="meter" title="risk {s.risk:.2f}">'
            f'<i style="width:{100 * min(max(s.risk, 0), 1):.1f}%"></i></span>'
            f'<span class="rval">{s.risk:.2f}{" ⚑" if s.flagged else ""}</span>'
            f'<span class="lb" title="lookback ratio: attention on sources vs. on its own text">'
            f"lookback {s.lookback:.2f}</span>{top_html}</button></li>"
        )
    return (
        '<section class="panel sentences" aria-label="Sentences"><h2>Sentences</h2>'
        f'<ol class="srows">{"".join(rows)}</ol></section>'
    )


def _legend(v: _View) -> str:
    t = min(max(v.threshold, 0.0), 1.0)
    return (
        '<div class="legend" aria-hidden="true"><span>low risk</span>'
        f'<span class="scale" style="--t:{100 * t:.1f}%">'
        f'<i class="tick" title="threshold {t:.2f}"></i></span>'
        f'<span>high</span><span class="thr">tick = threshold {t:.2f}</span></div>'
    )


def _source_card(v: _View, n: int, src: Source, spans: list[tuple[int, int, int]]) -> str:
    folder, name = _split_path(src.path)
    title = src.title.strip()
    show_title = bool(title) and title != name
    loc = []
    if src.page is not None:
        loc.append(f"p. {_e(src.page)}")
    if src.heading:
        loc.append(f"§ {_e(src.heading)}")
    matched = {i for _, _, i in spans}
    cited_by = [i for i, s in enumerate(v.answer.sentences) if n in _citations(s.text)]
    chips = []
    for i in cited_by:
        if i in matched:
            chips.append(f'<button type="button" class="sref" data-s="{i}">S{i + 1}</button>')
        else:
            chips.append(
                f'<button type="button" class="sref nomatch" data-s="{i}" '
                f'title="S{i + 1} cites this source, but no line here shares its words">S{i + 1}</button>'
            )
    cited_html = f'<div class="citedby">cited by {"".join(chips)}</div>' if chips else ""
    mass = src.attention_mass
    width = 0.0 if mass is None or not math.isfinite(mass) else 100 * min(max(mass, 0.0), 1.0)
    long_text = len(src.text) > CLAMP_CHARS
    return (
        f'<article class="card" id="src-{n}" data-n="{n}" data-chunk="{src.chunk_id}">'
        f'<header class="card-h"><span class="rank" title="rank {src.rank}">{n}</span>'
        '<div class="ttl">'
        f'<div class="fname" title="{_e(src.path)}">{_e(name or src.path)}</div>'
        + (f'<div class="title">{_e(title)}</div>' if show_title else "")
        + (f'<div class="dir">{_e(folder)}</div>' if folder else "")
        + (f'<div class="loc">{" · ".join(loc)}</div>' if loc else "")
        + "</div>"
        f'<div class="score" title="retrieval score">score<b>{src.score:.3f}</b></div></header>'
        '<div class="att">'
        '<span class="att-l">attention</span>'
        f'<span class="track" role="img" aria-label="{format_share(mass)} of the answer\'s attention">'
        f'<i class="fill" style="width:{width:.1f}%"></i><i class="sfill"></i></span>'
        f'<span class="att-v">{format_share(mass)}</span>'
        '<span class="s-v" aria-live="polite"></span></div>'
        f"{cited_html}"
        f'<div class="chunk{" long" if long_text else ""}" tabindex="-1">{_chunk_html(src.text, spans)}</div>'
        + (
            '<button type="button" class="more" aria-expanded="false" hidden>Show full chunk</button>'
            if long_text
            else ""
        )
        + "</article>"
    )


def _data(v: _View) -> str:
    """The JSON the script reads, safe inside <script type="application/json">."""
    data: dict[str, Any] = {
        "threshold": v.threshold,
        "sources": [{"n": n, "chunk_id": s.chunk_id} for n, s in enumerate(v.sources, 1)],
        "sentences": [
            {
                "risk": s.risk,
                "lookback": s.lookback,
                "flagged": s.flagged,
                "support": v.support(s),
                "cites": [n for n in _citations(s.text) if 1 <= n <= len(v.sources)],
            }
            for s in v.answer.sentences
        ],
    }
    text = json.dumps(data, ensure_ascii=True, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _clean(x: float, default: float = 0.0) -> float:
    """x, or ``default`` when it is NaN or infinite."""
    return float(x) if math.isfinite(x) else default


@lru_cache(maxsize=1)
def _template() -> tuple[Template, str]:
    """The page template and the CSP hash of its (only) executable script."""
    text = resources.files("rag").joinpath("templates/report.html").read_text(encoding="utf-8")
    scripts = re.findall(r"<script>(.*?)</script>", text, flags=re.S)
    if len(scripts) != 1:
        raise RuntimeError("report.html must hold exactly one executable <script>")
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode("utf-8")).digest()).decode("ascii")
    return Template(text), f"'sha256-{digest}'"


def render_html(answer: Answer) -> str:
    """The whole report for ``answer`` as one self-contained HTML page (a str; write it as UTF-8)."""
    answer = _sanitised(answer)
    sources = sorted(answer.sources, key=lambda s: s.rank)
    v = _View(answer, sources, answer.hallucination.threshold)

    spans: dict[int, list[tuple[int, int, int]]] = {n: [] for n in range(1, len(sources) + 1)}
    for i, s in enumerate(answer.sentences):
        for n in _citations(s.text):
            if 1 <= n <= len(sources):
                span = _best_span(sources[n - 1].text, s.text)
                if span is not None:
                    spans[n].append((span[0], span[1], i))

    cards = "".join(_source_card(v, n, src, spans[n]) for n, src in enumerate(sources, 1))
    model = answer.model or {}
    models = "".join(f"<div><dt>{_e(k)}</dt><dd>{_e(val)}</dd></div>" for k, val in model.items() if val)
    sink = answer.attention_sink
    template, script_hash = _template()
    return template.substitute(
        title=_e(f"sightline report: {answer.question[:80]}"),
        script_hash=script_hash,
        answer_id=_e(answer.id),
        question=_e(answer.question),
        badge=_header_badge(v),
        models=models,
        created_iso=_e(answer.created_at),
        created=_e(_format_time(answer.created_at)),
        timings=_timings(v),
        abstained=_abstained(v),
        answer_html=_answer_html(v) if answer.answer.strip() else '<span class="muted">(empty answer)</span>',
        legend=_legend(v) if answer.sentences else "",
        sentence_rows=_sentence_rows(v),
        hint="Hover, focus or tap a sentence to light up the sources it looked at."
        if answer.sentences
        else "No sentence-level attribution for this answer.",
        n_sources=len(sources),
        source_cards=cards or '<p class="muted">No sources were retrieved.</p>',
        sink=format_share(sink),
        sink_class="" if sink > 0 else " hidden",
        data=_data(v),
    )


def _sanitised(answer: Answer) -> Answer:
    """A copy with NaN/inf numbers replaced (by 0; a threshold by 0.5) so the page and its JSON stay valid."""
    a = copy.deepcopy(answer)
    a.attention_sink = _clean(a.attention_sink or 0.0)
    for s in a.sentences:
        s.risk, s.lookback = _clean(s.risk), _clean(s.lookback)
        s.support = {int(k): _clean(x) for k, x in s.support.items()}
    for src in a.sources:
        src.score = _clean(src.score)
        if src.attention_mass is not None:
            src.attention_mass = _clean(src.attention_mass)
    h = a.hallucination
    h.risk, h.threshold = _clean(h.risk), _clean(h.threshold, 0.5)
    for name in ("retrieve_ms", "prefill_ms", "decode_ms", "attribute_ms", "total_ms"):
        setattr(a.timings, name, _clean(getattr(a.timings, name)))
    return a
