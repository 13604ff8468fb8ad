"""Request and response shapes of the REST API (docs/design.md, "REST"). /openapi.json is generated from
these, so it describes what the service really accepts and returns.

Text fields reject NUL characters and lone surrogates: neither survives PostgreSQL or UTF-8, so
letting them through would turn a caller's mistake into a server error."""

from __future__ import annotations

from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    StringConstraints,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue

from rag.ingest.records import IngestSummary
from rag.inputs import (
    MAX_ANSWER_CHARS,
    MAX_ANSWER_TOKENS,
    MAX_CHUNK_IDS,
    MAX_CONTEXT_CHARS,
    MAX_DOC_TYPE_CHARS,
    MAX_K,
    MAX_PATH_CHARS,
    MAX_QUESTION_CHARS,
    MAX_QUESTION_TOKENS,
    MAX_SQL_INT,
    NO_NUL_PATTERN,
    TEXT_PATTERN,
    blank,
    unclean,
)
from rag.retrieve.retriever import Filters
from rag.storage.queries import AnswerSummary, DocumentInfo
from rag.types import RetrievalMode, Source

MAX_UNKNOWN_FIELDS = 8  # past this many, one error for them all
# The largest valid body is an attribute call with question, answer and context at their limits and
# every character JSON-escaped as a surrogate pair (12 bytes): ~290 KB. Every other body holds at
# most a question and a path prefix (~100 KB so escaped); a tighter bound keeps what one request can
# make the event loop parse small.
MAX_JSON_BYTES = 128 * 1024
MAX_ATTRIBUTE_JSON_BYTES = 512 * 1024


def _clean_text(value: str) -> str:
    problem = unclean(value)
    if problem:
        raise ValueError(problem)
    return value


def _not_blank(value: str) -> str:
    problem = blank(value)
    if problem:
        raise ValueError(problem)
    return value


@dataclass(frozen=True)
class _Pattern:
    """States in the schema what the validators next to it check (a pydantic ``pattern`` would check
    it again, with a less helpful message): clients and schema fuzzers see every refusal up front."""

    pattern: str

    def __get_pydantic_json_schema__(self, schema: Any, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        found = handler(schema)
        found["pattern"] = self.pattern
        return found


CleanText = Annotated[str, AfterValidator(_clean_text), _Pattern(NO_NUL_PATTERN)]
Question = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_QUESTION_CHARS),
    AfterValidator(_clean_text),
    AfterValidator(_not_blank),
    _Pattern(TEXT_PATTERN),
]
_QUESTION_LIMITS = (
    f"1 to {MAX_QUESTION_CHARS:,} characters, some not whitespace, none NUL, and for ask and attribute "
    f"at most {MAX_QUESTION_TOKENS:,} tokens of the generator's tokenizer (422 beyond either; tokens "
    "cannot be stated in characters: one character may be several tokens)"
)


def _integral(value: Any) -> Any:
    """7.0 as 7: JSON Schema's integer includes numbers with a zero fraction, and strict mode (below)
    would refuse them. Strings and fractions are still refused."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


TopK = Annotated[
    Annotated[int, Field(ge=1, le=MAX_K), BeforeValidator(_integral)] | None,
    Field(description="how many sources to retrieve"),
]
ChunkId = Annotated[int, Field(ge=1, le=MAX_SQL_INT), BeforeValidator(_integral)]


class _Request(BaseModel):
    """Unknown fields are an error (a misspelt option should not be silently ignored), and so are
    values of the wrong JSON type (``"k": "3"``, ``"stream": 0``): the request means what it says."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _few_unknown_fields(cls, data: Any) -> Any:
        """One error for a body of many unknown fields: pydantic would build one per field on the event
        loop (20k of them took 80 ms a request, and 20 such clients stalled /healthz for 1.5 s)."""
        if isinstance(data, dict) and len(data) > len(cls.model_fields) + MAX_UNKNOWN_FIELDS:
            unknown = [key for key in data if key not in cls.model_fields]
            shown = ", ".join(repr(key[:40]) for key in unknown[:5])
            fields = ", ".join(cls.model_fields)
            raise ValueError(f"{len(unknown):,} unknown fields ({shown}, ...); the fields are {fields}")
        return data


class FiltersIn(_Request):
    path_prefix: Annotated[CleanText, StringConstraints(max_length=MAX_PATH_CHARS)] | None = Field(
        None, description="only documents whose path starts with this"
    )
    doc_type: Annotated[CleanText, StringConstraints(max_length=MAX_DOC_TYPE_CHARS)] | None = Field(
        None, description="only this type: pdf, md, html, ..."
    )

    def to_filters(self) -> Filters:
        return Filters(self.path_prefix, self.doc_type)


class SearchRequest(_Request):
    query: Question = Field(
        description=f"1 to {MAX_QUESTION_CHARS:,} characters, some not whitespace, none NUL (422 otherwise)"
    )
    k: TopK = None
    filters: FiltersIn | None = None
    mode: RetrievalMode | None = Field(None, description="retrieval mode; default from the settings")


class AskRequest(_Request):
    question: Question = Field(description=_QUESTION_LIMITS)
    k: TopK = None
    filters: FiltersIn | None = None
    mode: RetrievalMode | None = Field(None, description="retrieval mode; default from the settings")
    stream: bool = Field(
        False, description="server-sent events: `sources`, `token`…, then `done` with the full Answer"
    )
    guided: bool | None = Field(
        None, description="guided decoding: by steps, each the least risky of a few sampled candidates "
        "(slower); default from the settings. The answer's model.decoding says which was used"
    )


class AttributeRequest(_Request):
    question: Question = Field(description=_QUESTION_LIMITS)
    answer: Annotated[
        str,
        StringConstraints(min_length=1, max_length=MAX_ANSWER_CHARS),
        AfterValidator(_clean_text),
        AfterValidator(_not_blank),
        _Pattern(TEXT_PATTERN),
    ] = Field(
        description="an answer written elsewhere (by any LLM) to check against the sources: up to "
        f"{MAX_ANSWER_CHARS:,} characters and {MAX_ANSWER_TOKENS:,} tokens"
    )
    context: Annotated[CleanText, StringConstraints(max_length=MAX_CONTEXT_CHARS)] | None = Field(
        None, description="the context the answer was written from"
    )
    chunk_ids: Annotated[list[ChunkId], Field(min_length=1, max_length=MAX_CHUNK_IDS)] | None = Field(
        None, description="stored chunks the answer was written from"
    )

    @model_validator(mode="after")
    def _one_source_kind(self) -> AttributeRequest:
        if self.context is not None and self.chunk_ids is not None:
            raise ValueError("give context or chunk_ids, not both")
        return self


# responses: the library's types (rag.types, rag.storage.queries, rag.ingest.records) and wrappers -----


class AnswerList(BaseModel):
    answers: list[AnswerSummary] = Field(description="newest first")
    total: int = Field(description="stored answers in all")
    limit: int
    offset: int


class SearchResponse(BaseModel):
    results: list[Source]


class DocumentList(BaseModel):
    documents: list[DocumentInfo]


UploadStatus = Literal["ok", "failed", "duplicate"]


class UploadedOut(BaseModel):
    filename: str = Field(description="the name the client sent (its last path component)")
    path: str = Field(
        description="where the service stored it; the document's path (a duplicate is not kept there)"
    )
    document_id: int | None = Field(
        description="the document it became, or for a duplicate the existing one (null if never recorded)"
    )
    status: UploadStatus = Field(
        description="ok; failed (see `failed` for why); or duplicate: the same content is already document "
        "`document_id` under another name, so it was not ingested again and the upload was not kept"
    )


@dataclass
class IngestSummaryOut(IngestSummary):
    """As `rag ingest --json`, plus which document each uploaded file became."""

    uploaded: list[UploadedOut] = field(default_factory=list)


class Health(BaseModel):
    status: Literal["ok", "loading", "degraded", "error"] = Field(
        description="degraded: the database cannot be used (see detail); error: the models failed to load"
    )
    ready: bool = Field(description="models loaded and the database answering; asks will not wait")
    generator_loaded: bool
    detail: str | None = None
    pid: int = Field(description="the worker process that answered")


class ErrorOut(BaseModel):
    detail: str | list[dict[str, Any]] = Field(description="what to fix; a list for validation errors")


_ERROR_SCHEMA = ErrorOut.model_json_schema()


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the JSON errors a route can answer with. The media type is spelled out:
    with "model" alone, FastAPI would document an HTML route's errors as HTML."""
    return {
        code: {
            "description": HTTPStatus(code).phrase,
            "content": {"application/json": {"schema": _ERROR_SCHEMA}},
        }
        for code in codes
    }
