"""From attention masses to what the user sees: each chunk's share of the answer's attention, each
sentence's support and lookback ratio, and a hallucination risk per sentence and for the answer.

Input is a `Generation` (rag.generate.decoding): features (T, L, H, S) = for each answer token t, layer l and
head h, the attention mass on each prompt segment (sink, instruction, question, answer so far, chunk
1..k). Definitions follow docs/design.md "Attribution: definitions":

    chunk mass  m_c(t) = mass of t on chunk c, averaged over heads and the attribution layers
    answer share       = mean_t m_c(t), normalised over the retrieved chunks (shares sum to 1)
    lookback ratio     = mass on chunks / (mass on chunks + mass on the answer so far)

Attribution layers are the upper half of the network: the lower layers attend by position (the
first and last chunk get most of their attention whatever they say), the upper ones by content;
on SQuAD questions with the answer in one of three chunks the upper half picked the right chunk far
more often. A sentence pools its tokens' masses before taking any ratio (see rag.attribute.detector for why).
The first token (the attention sink) soaks up a large part of all attention whatever the question;
it is reported apart and counted neither as context nor in the shares.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from rag.attribute.detector import Detector, pool
from rag.generate.attention import FIRST_CHUNK, GENERATED, SINK, attribution_layers
from rag.generate.decoding import Generation
from rag.text import split_sentences
from rag.types import Attribution, Evidence, Hallucination, SentenceAttribution, Source


def chunk_masses(masses: torch.Tensor) -> torch.Tensor:
    """(T, L, H, S) -> (T, k): each token's mass per chunk, mean over heads and attribution layers."""
    return masses[:, attribution_layers(masses.shape[1]), :, FIRST_CHUNK:].mean(dim=(1, 2))


def normalised(x: torch.Tensor) -> torch.Tensor:
    """Scale to sum 1 (uniform when all zero, which only happens with no tokens)."""
    total = x.sum()
    return x / total if total > 0 else torch.full_like(x, 1.0 / max(len(x), 1))


def lookback_ratios(masses: torch.Tensor) -> torch.Tensor:
    """(T, L, H, S) -> (T,): per token, chunk mass / (chunk mass + answer mass), over all layers and
    heads. The first token has no answer to look back on: its ratio is 1."""
    chunks = masses[..., FIRST_CHUNK:].sum(-1).mean(dim=(1, 2))  # (T,)
    answer = masses[..., GENERATED].mean(dim=(1, 2))  # (T,)
    return chunks / (chunks + answer).clamp_min(1e-12)


def pooled_lookback(masses: torch.Tensor) -> float:
    """One ratio for a set of tokens: their masses are summed before the ratio is taken."""
    chunks = float(masses[..., FIRST_CHUNK:].sum())
    answer = float(masses[..., GENERATED].sum())
    return chunks / (chunks + answer) if chunks + answer > 0 else 1.0


# --------------------------------------------------------------------------------------------------
# sentences


def sentence_of_tokens(offsets: Sequence[tuple[int, int]], sentences: Sequence[tuple[int, int]]) -> list[int]:
    """Per token, the index of the sentence holding its last character (-1: whitespace between)."""
    owner = []
    for start, end in offsets:
        anchor = end - 1 if end > start else start
        owner.append(next((i for i, (s, e) in enumerate(sentences) if s <= anchor < e), -1))
    return owner


def evidence_spans(
    generation: Generation, sources: Sequence[Source], rows: torch.Tensor | None = None, limit: int = 3
) -> list[Evidence]:
    """The source sentences the chosen answer tokens ((T,) bool, default all) attended to most.

    Each chunk's text is cut into sentences; a sentence's mass is the attention (mean over heads of
    the attribution layers, kept per prompt token in the decoding pass) of the chosen tokens on the
    tokens inside it, as a share of their attention on all chunks. Spans under a quarter of the top
    one are dropped: they are where attention rests, not what the sentence drew on."""
    prompt = generation.prompt
    masses = generation.token_masses if rows is None else generation.token_masses[rows]
    per_token = masses.sum(0).double().numpy()  # (P,)
    # a token belongs to the source sentence holding its last character (as answer tokens do)
    anchors = np.array([max(e - 1, s) for s, e in prompt.token_chars])
    found: list[tuple[float, int, tuple[int, int]]] = []
    total = 0.0
    for i, source in enumerate(sources[: prompt.n_chunks]):
        lo, hi = prompt.chunk_spans[i]
        spans = split_sentences(source.text)
        pos = anchors[lo:hi] - prompt.chunk_text_at[i]  # each token's char in source.text
        total += float(per_token[lo:hi].sum())
        if not spans:
            continue
        span_starts = np.array([s for s, _ in spans])
        which = np.searchsorted(span_starts, pos, side="right") - 1
        inside = (which >= 0) & (pos < np.array([e for _, e in spans])[which.clip(0)])
        span_mass = np.bincount(which[inside], weights=per_token[lo:hi][inside], minlength=len(spans))
        found += [(float(m), i, span) for m, span in zip(span_mass, spans, strict=True) if m > 0]
    if not found or total <= 0:
        return []
    found.sort(key=lambda f: -f[0])
    top = found[0][0]
    out = []
    for mass, i, (s, e) in found[:limit]:
        if mass < top / 4:
            break
        source = sources[i]
        out.append(Evidence(source.chunk_id, source.document_id, source.path, source.char_start + s,
                            source.char_start + e, source.text[s:e], mass / total))
    return out


def sentence_rows(generation: Generation) -> list[tuple[tuple[int, int], torch.Tensor]]:
    """Each sentence's char span in the answer and which of its tokens ((T,) bool) belong to it."""
    spans = split_sentences(generation.text)
    owner = torch.tensor(sentence_of_tokens(generation.offsets, spans), dtype=torch.long)
    return [(span, owner == i) for i, span in enumerate(spans)]


# --------------------------------------------------------------------------------------------------
# the report


def attribute(
    generation: Generation, sources: Sequence[Source], detector: Detector | None = None
) -> Attribution:
    """Shares, sentence support, lookback and risk for an answer; fills `Source.attention_mass`.

    `sources` are the retrieved chunks the prompt was built from, in rank order; those the prompt
    had no room for get share 0."""
    prompt = generation.prompt
    if [s.chunk_id for s in sources[: prompt.n_chunks]] != prompt.chunk_ids:
        raise ValueError("sources do not match the chunks the generation's prompt was built from")
    masses = generation.features  # (T, L, H, S)
    L, H = masses.shape[1], masses.shape[2]
    detector = detector or Detector.baseline()
    if not detector.fits(L, H):
        detector = Detector.baseline()  # weights trained on another generator do not transfer
    k, T = prompt.n_chunks, masses.shape[0]
    per_chunk = chunk_masses(masses)  # (T, k)

    def support(rows: torch.Tensor) -> dict[int, float]:
        shares = normalised(per_chunk[rows].mean(0)) if k else per_chunk.new_zeros(0)
        out = {s.chunk_id: 0.0 for s in sources}
        for chunk_id, share in zip(prompt.chunk_ids, shares.tolist(), strict=True):
            out[chunk_id] += share
        return out

    everything = torch.ones(T, dtype=torch.bool)
    answer_support = support(everything)
    for source in sources:
        source.attention_mass = answer_support[source.chunk_id] if T else None

    sentences = []
    for (start, end), rows in sentence_rows(generation):
        has_tokens = bool(rows.any())
        pooled = pool(generation, rows)
        risk = detector.risk(pooled) if has_tokens else 0.0
        sentences.append(
            SentenceAttribution(
                text=generation.text[start:end],
                start=start,
                end=end,
                support=support(rows) if has_tokens else {s.chunk_id: 0.0 for s in sources},
                lookback=pooled_lookback(masses[rows]),
                risk=risk,
                flagged=risk >= detector.threshold,
                heads=np.round(pooled.lookback.reshape(L, H), 2).tolist(),
                evidence=evidence_spans(generation, sources, rows) if has_tokens else [],
            )
        )
    # the answer is as risky as its riskiest sentence: one made-up claim is enough to warn about
    risk = max((s.risk for s in sentences), default=0.0)
    return Attribution(
        sources=list(sources),
        sentences=sentences,
        hallucination=Hallucination(
            risk=risk, flagged=risk >= detector.threshold and bool(sentences), method=detector.method,
            threshold=detector.threshold,
        ),
        attention_sink=float(masses[..., SINK].mean()) if T else 0.0,
    )
