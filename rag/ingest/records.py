"""What an ingest run reports (``IngestSummary`` and its parts), and the records a file becomes on
its way through the sync (rag.ingest.sync, rag.ingest.distributed): examined, then chunked and pending."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any

from pydantic import ConfigDict, Field

from rag.parse.scan import ScannedFile
from rag.types import ChunkSpan, LoadedDocument

ProgressFn = Callable[[int, int, str], None]  # (done, total, current path)


@dataclass
class FileFailure:
    path: str
    error: str


@dataclass
class Duplicate:
    """A file not ingested because document ``document_id`` (at ``of_path``) has the same content."""

    path: Annotated[str, Field(description="the file that was not ingested")]
    document_id: Annotated[int, Field(description="the existing document with the same content (sha256)")]
    of_path: Annotated[str, Field(description="that document's path")]


@dataclass
class IngestSummary:
    """What `rag ingest --json` prints (docs/design.md, "CLI")."""

    # every field is in every response, so the API's schema requires them all
    __pydantic_config__ = ConfigDict(json_schema_serialization_defaults_required=True)

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    failed: list[FileFailure] = field(default_factory=list)
    duplicates: Annotated[
        list[Duplicate],
        Field(description="files not ingested: their content (sha256) is already a document at another path"),
    ] = field(default_factory=list)
    skipped: Annotated[
        dict[str, int],
        Field(description='files not read, by why: {"unsupported": n} for types sightline does not read'),
    ] = field(default_factory=dict)
    unsupported: Annotated[
        list[str], Field(description="the files of a type sightline does not read (counted in skipped)")
    ] = field(default_factory=list)
    documents: int = 0
    chunks: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Known:
    """What SQL already holds for a path: enough to decide 'unchanged' without a query per file."""

    id: int
    status: str
    sha256: str


@dataclass
class Examined:
    """One scanned file after the prefetch thread looked at it: unchanged, failed (with the reason),
    or loaded (with its hash and text)."""

    file: ScannedFile
    known: Known | None
    unchanged: bool = False
    error: str | None = None
    recordable: bool = True  # False: the path itself cannot be stored, so no 'failed' row for it
    sha256: str = ""
    doc: LoadedDocument | None = None

    @property
    def needs_load(self) -> bool:
        return not self.unchanged and self.error is None and self.doc is None


@dataclass
class Pending:
    """A loaded and chunked file waiting for its embeddings."""

    file: ScannedFile
    sha256: str
    doc: LoadedDocument
    chunks: list[ChunkSpan]
    existing_id: int | None
