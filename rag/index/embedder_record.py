"""Which embedder made the embeddings stored in SQL, and the refusal to use them under another one.

Stored vectors are only comparable with queries embedded by the same model. The workspace records
the model's name and dimension (table ``workspace_meta``) in the transaction that first writes
chunks. A search, ask, ingest or index command under another ``RAG_EMBEDDER`` is then refused with
one line that says how to get out (set it back, or ``rag index rebuild --re-embed``), instead of
filling the index with one model's vectors and querying it with another's. Names are compared as
given: the same model as a package spec and as a local path counts as two embedders. The name is
``Settings.embedder_id``: the spec, with ``+onnx-int8`` under RAG_EMBED_BACKEND=onnx-int8, whose
vectors differ from the model's own (see there why plain ONNX shares the spec's name).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from rag.config import ONNX_INT8, Settings
from rag.index import snapshots
from rag.index.vectors import read_manifest
from rag.storage.database import Database
from rag.storage.engine import transaction
from rag.storage.orm import Chunk, WorkspaceMeta

NAME_KEY = "embedder"
DIM_KEY = "embedding_dim"


@dataclass(frozen=True)
class EmbedderRecord:
    name: str  # the RAG_EMBEDDER spec, as configured when the embeddings were made
    dim: int


class EmbedderMismatch(RuntimeError):
    """The configured embedder is not the one that made the stored embeddings."""

    def __init__(self, recorded: EmbedderRecord, configured: str) -> None:
        self.recorded = recorded
        self.configured = configured
        made, undo = f"RAG_EMBEDDER is '{configured}'", f"set RAG_EMBEDDER back to '{recorded.name}'"
        if ONNX_INT8 in recorded.name + configured:
            made = (f"RAG_EMBEDDER and RAG_EMBED_BACKEND make '{configured}' ('{ONNX_INT8}': "
                    "RAG_EMBED_BACKEND=onnx-int8)")
            undo = f"set them back to make '{recorded.name}'"
        super().__init__(
            f"this workspace's chunks were embedded with '{recorded.name}' ({recorded.dim} dimensions) "
            f"but {made}: {undo}, or run "
            f"'rag index rebuild --re-embed' to embed every chunk again with '{configured}'"
        )


def read_record(session: Session) -> EmbedderRecord | None:
    query = select(WorkspaceMeta.key, WorkspaceMeta.value).where(WorkspaceMeta.key.in_((NAME_KEY, DIM_KEY)))
    rows = {key: value for key, value in session.execute(query)}
    if NAME_KEY not in rows or DIM_KEY not in rows:
        return None
    return EmbedderRecord(rows[NAME_KEY], int(rows[DIM_KEY]))


def write_record(session: Session, record: EmbedderRecord) -> None:
    """Set the record inside the caller's transaction (the one that writes the vectors it names)."""
    for key, value in ((NAME_KEY, record.name), (DIM_KEY, str(record.dim))):
        session.merge(WorkspaceMeta(key=key, value=value))


def claim(session: Session, name: str, dim: int) -> None:
    """Record ``name`` as the maker of the stored embeddings, in the transaction that writes chunks.
    Called by a writer after ``check`` passed: a record that differs then belongs to chunks since
    deleted."""
    record = EmbedderRecord(name, dim)
    if read_record(session) != record:
        write_record(session, record)


def stored_dim(session: Session) -> int | None:
    """The dimension of the stored embeddings, from one chunk's bytes (float32); None: no chunks."""
    size = session.scalar(select(func.length(Chunk.embedding)).limit(1))
    return None if size is None else int(size) // 4


def saved_index_model(index_dir: Path) -> str | None:
    """The model named by the current snapshot's vector manifest (or the old flat layout's), if any."""
    manifest = read_manifest(snapshots.current_folder(index_dir)) or {}
    model = manifest.get("model")
    return model if isinstance(model, str) else None


def check(sessions: sessionmaker[Session], settings: Settings, can_write: bool) -> EmbedderRecord | None:
    """The record of the stored embeddings (None while there are none); raises ``EmbedderMismatch``
    when the configured embedder did not make them. A workspace from before records were kept (chunks,
    no record) adopts the model its saved index manifest names, else the configured embedder: the
    manifest is the only trace of the model that wrote the chunks. The dimension is read from the
    stored vectors. The adopted record is written down where the database can be written."""
    with sessions() as s:
        record = read_record(s)
        dim = stored_dim(s) if record is None or record.name != settings.embedder_id else None
    if record is None:
        if dim is None:
            return None
        record = EmbedderRecord(saved_index_model(settings.index_dir) or settings.embedder_id, dim)
        if can_write:
            record = _adopt(sessions, record)
    elif record.name != settings.embedder_id and dim is None:
        return None  # every chunk is gone: nothing to mix up; the next ingest records its own
    if record.name != settings.embedder_id:
        raise EmbedderMismatch(record, settings.embedder_id)
    return record


def _adopt(sessions: sessionmaker[Session], record: EmbedderRecord) -> EmbedderRecord:
    """Write an adopted record unless another process wrote one first; returns the one that stands."""
    try:
        with transaction(sessions) as s:
            if read_record(s) is None:
                write_record(s, record)
    except IntegrityError:
        pass  # a concurrent adopter inserted the same keys
    with sessions() as s:
        return read_record(s) or record


def check_embedder(database: Database) -> None:
    """Refuse, before any vector is used, when the configured embedder did not make the stored
    embeddings."""
    check(database.sessions, database.settings, can_write=database.stores_answers)
