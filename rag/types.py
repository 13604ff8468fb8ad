"""Typed values that pass between the stages (load → chunk → embed → index → retrieve → generate →
attribute). Each stage takes and returns these, so a stage can be called and tested alone.

They are also the REST API's response shapes (/openapi.json is generated from them through pydantic):
one definition a shape, so the CLI's JSON, the stored reports and the API cannot drift apart. The
descriptions on their fields are what the API documents."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Annotated, Any, Literal, get_args

from pydantic import ConfigDict, Field, TypeAdapter
from typing_extensions import TypedDict  # pydantic reads typing's only from Python 3.12

RetrievalMode = Literal["dense", "lexical", "hybrid"]
"""How retrieval ranks chunks: embedding cosine, BM25, or the two fused (rag.retrieve.fusion)."""
RETRIEVAL_MODES: tuple[RetrievalMode, ...] = get_args(RetrievalMode)
FusionMethod = Literal["convex", "rrf"]
"""How hybrid retrieval fuses its two lists: min-max scores mixed by weight, or reciprocal ranks."""
FUSION_METHODS: tuple[FusionMethod, ...] = get_args(FusionMethod)
EmbedBackend = Literal["torch", "onnx", "onnx-int8"]
"""What runs the embedder: torch, or ONNX Runtime with fp32 or int8 weights (rag.embed.onnx_encoder)."""
EMBED_BACKENDS: tuple[EmbedBackend, ...] = get_args(EmbedBackend)
AnswerKind = Literal["generated", "quotes", "refusal"]
"""An answer as generated; the verbatim evidence of a held-back draft; or no answer."""

SourceState = Literal["changed", "gone"]
"""A stored answer's source as it stands now: its chunk holds other text, or no longer exists."""

HeldBack = Literal["no_sources", "risk", "names_a_source"]
"""Why an answer's draft was held back: nothing relevant retrieved (no draft written), its risk reached
the abstention level, or it only named a source."""


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
    """A retrieved chunk as the user sees it."""  # docs/design.md, "Answer": `Source`

    rank: int
    chunk_id: int
    document_id: int
    path: str
    title: str
    text: str
    char_start: int
    char_end: int
    score: float
    attention_mass: Annotated[
        float | None, Field(description="share of the answer's attention on the retrieved chunks (sums to 1)")
    ] = None
    doc_type: str = ""
    page: int | None = None
    heading: str | None = None
    stale: Annotated[
        SourceState | None,
        Field(
            description="a stored answer's source now: 'changed' (its chunk holds other text), 'gone' (its "
            "chunk was deleted or re-ingested); null when unchanged or just retrieved. text is always "
            "what the answer saw"
        ),
    ] = None

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
    char_start: Annotated[int, Field(description="offset into the document's text")]
    char_end: int
    text: Annotated[str, Field(description="document_text[char_start:char_end]")]
    mass: Annotated[float, Field(description="share of the sentence's attention on the sources")]


@dataclass
class SentenceAttribution:
    text: str
    start: int  # char offsets into the answer text
    end: int
    support: Annotated[dict[int, float], Field(description="chunk id → share of this sentence's attention")]
    lookback: float  # pooled: mass on chunks / (mass on chunks + mass on the answer so far)
    risk: float
    flagged: bool
    # pooled lookback ratio per layer and head (rounded): which heads looked back at the sources
    heads: Annotated[list[list[float]], Field(description="lookback ratio per layer, per head")] = field(
        default_factory=list
    )
    evidence: Annotated[list[Evidence], Field(description="source spans it drew on")] = field(
        default_factory=list
    )  # mass-ordered, at most a few


@dataclass
class Hallucination:
    risk: float
    flagged: bool
    method: str
    threshold: float


@dataclass
class Timings:
    # every field is in every response, so the API's schema requires them all
    __pydantic_config__ = ConfigDict(json_schema_serialization_defaults_required=True)

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


DecodingMode = Literal["greedy", "guided"]
"""Greedy, or guided: by steps, each the least risky of a few candidates (rag.answer.guided)."""


class Models(TypedDict):
    """The models behind an answer (the OpenAPI component keeps this name)."""

    generator: str
    embedder: str
    decoding: DecodingMode


@dataclass
class Answer:
    id: str
    question: str
    answer: str
    created_at: str
    model: Models
    sources: list[Source]
    sentences: list[SentenceAttribution]
    hallucination: Hallucination
    timings: Timings
    abstained: bool = False
    draft: Annotated[
        str | None, Field(description="when abstaining after generation: the held-back answer")
    ] = None
    attention_sink: float = 0.0
    answer_kind: AnswerKind = "generated"
    held_back: Annotated[
        HeldBack | None,
        Field(description="why the draft was not given as the answer (rag.answer.verdict); null: it stands"),
    ] = None
    held_back_reason: Annotated[str | None, Field(description="the held_back verdict in words")] = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_report(cls, report: dict[str, Any]) -> Answer:
        """A stored answer (``to_dict``), validated: older ones lack answer_kind (an abstention then
        was a refusal) and the decoding (then always greedy)."""
        kind = "refusal" if report.get("abstained") else "generated"
        model = {"decoding": "greedy", **report.get("model", {})}
        return ANSWER.validate_python({"answer_kind": kind, **report, "model": model})


ANSWER: TypeAdapter[Answer] = TypeAdapter(Answer)
