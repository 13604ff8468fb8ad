"""Typed values that pass between the stages (load → chunk → embed → index → retrieve → generate →
attribute). Each stage takes and returns these, so a stage can be called and tested alone."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

RetrievalMode = Literal["dense", "lexical", "hybrid"]
"""How retrieval ranks chunks: embedding cosine, BM25, or the two fused (rag.fusion)."""
RETRIEVAL_MODES: tuple[RetrievalMode, ...] = get_args(RetrievalMode)
FusionMethod = Literal["convex", "rrf"]
"""How hybrid retrieval fuses its two lists: min-max scores mixed by weight, or reciprocal ranks."""
FUSION_METHODS: tuple[FusionMethod, ...] = get_args(FusionMethod)


class LoadError(Exception):
    """A file could not be turned into text; the message says why, in words a user can act on."""


class BadInput(ValueError):
    """A request the caller must fix (empty or oversized question, unknown chunk ids, ...)."""


@dataclass(frozen=True)
class Section:
    """A structural span of a loaded document's text: a PDF page, or the text under one heading."""

    start: int
    end: int
    page: int | None = None
    heading: str | None = None


@dataclass
class LoadedDocument:
    text: str
    title: str
    doc_type: str  # "txt", "md", "html", "pdf", "docx", "pptx", "csv", "json", ...
    mime: str
    sections: list[Section] = field(default_factory=list)


@dataclass(frozen=True)
class ChunkSpan:
    """A chunk before it is stored: ``document_text[char_start:char_end] == text`` always holds."""

    text: str
    char_start: int
    char_end: int
    token_count: int
    page: int | None = None
    heading: str | None = None


@dataclass
class Source:
    """A retrieved chunk as the user sees it (DESIGN.md `Source`)."""

    rank: int
    chunk_id: int
    document_id: int
    path: str
    title: str
    text: str
    char_start: int
    char_end: int
    score: float
    attention_mass: float | None = None
    doc_type: str = ""
    page: int | None = None
    heading: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_context(cls, context: str) -> Source:
        """A text given with a question (`rag attribute --context`) as the one source to attend to."""
        return cls(1, 0, 0, "(context)", "context", context, 0, len(context), 1.0)


@dataclass
class Evidence:
    """A span of a source that a sentence drew on: ``document_text[char_start:char_end] == text``."""

    chunk_id: int
    document_id: int
    path: str
    char_start: int  # offsets into the document
    char_end: int
    text: str
    mass: float  # share of the sentence's attention on the sources that went to this span


@dataclass
class SentenceAttribution:
    text: str
    start: int  # char offsets into the answer text
    end: int
    support: dict[int, float]  # chunk_id -> share of this sentence's attention on the chunks
    lookback: float  # pooled: mass on chunks / (mass on chunks + mass on the answer so far)
    risk: float
    flagged: bool
    # pooled lookback ratio per layer and head (rounded): which heads looked back at the sources
    heads: list[list[float]] = field(default_factory=list)
    evidence: list[Evidence] = field(default_factory=list)  # mass-ordered, at most a few


@dataclass
class Hallucination:
    risk: float
    flagged: bool
    method: str
    threshold: float


@dataclass
class Timings:
    retrieve_ms: float = 0.0
    prefill_ms: float = 0.0
    decode_ms: float = 0.0
    attribute_ms: float = 0.0
    total_ms: float = 0.0


@dataclass
class Attribution:
    """What `rag attribute` / `POST /v1/attribute` returns: the attribution part of an Answer."""

    sources: list[Source]
    sentences: list[SentenceAttribution]
    hallucination: Hallucination
    attention_sink: float  # mean attention on the first token, reported apart from the context

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Answer:
    id: str
    question: str
    answer: str
    created_at: str
    model: dict[str, str]
    sources: list[Source]
    sentences: list[SentenceAttribution]
    hallucination: Hallucination
    timings: Timings
    abstained: bool = False
    draft: str | None = None  # when abstaining after generation: the answer that was held back
    attention_sink: float = 0.0
    # "generated"; "quotes": verbatim evidence of a held-back draft; "refusal": no answer
    answer_kind: str = "generated"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Answer:
        return cls(
            id=d["id"],
            question=d["question"],
            answer=d["answer"],
            created_at=d["created_at"],
            model=d["model"],
            sources=[Source(**s) for s in d["sources"]],
            sentences=[
                SentenceAttribution(**{
                    **s,
                    "support": {int(k): v for k, v in s["support"].items()},
                    "evidence": [Evidence(**e) for e in s.get("evidence", [])],
                })
                for s in d["sentences"]
            ],
            hallucination=Hallucination(**d["hallucination"]),
            timings=Timings(**d["timings"]),
            abstained=d.get("abstained", False),
            draft=d.get("draft"),
            attention_sink=d.get("attention_sink", 0.0),
            answer_kind=d.get("answer_kind", "refusal" if d.get("abstained") else "generated"),
        )
