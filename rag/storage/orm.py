"""SQLAlchemy models: the database is the source of truth; FAISS and BM25 are derived from it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from rag.inputs import MAX_DOC_TYPE_CHARS, MAX_PATH_CHARS, MAX_TITLE_CHARS


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


# Ids users see (documents, chunks = FAISS ids, ingest runs) are never handed out twice: SQLite
# otherwise gives a new row max(id) + 1, reusing the newest deleted one (migration 0005). PostgreSQL's
# SERIAL sequences never go back.
NEVER_REUSED: dict[str, Any] = {"sqlite_autoincrement": True}


class Document(Base):
    """One source file. ``status`` is ``ok`` or ``failed`` (with ``error``); failed files are retried.
    ``sha256`` is indexed: ingest asks whether a new file's content is already a document."""

    __tablename__ = "documents"
    __table_args__ = NEVER_REUSED

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(String(MAX_PATH_CHARS), unique=True, index=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    mtime: Mapped[float] = mapped_column(Float)
    mime: Mapped[str] = mapped_column(String(128))
    doc_type: Mapped[str] = mapped_column(String(MAX_DOC_TYPE_CHARS), index=True)
    title: Mapped[str] = mapped_column(String(MAX_TITLE_CHARS), default="")
    status: Mapped[str] = mapped_column(String(16), default="ok")
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    chunks: Mapped[list[Chunk]] = relationship(
        back_populates="document",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="Chunk.ordinal",
    )


class Chunk(Base):
    """A span of a document's extracted text; ``id`` is also its FAISS id. Keeps its embedding so the
    vector index can be rebuilt without the model (the one ``WorkspaceMeta`` names)."""

    __tablename__ = "chunks"
    __table_args__ = NEVER_REUSED

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"), index=True)
    ordinal: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    char_start: Mapped[int] = mapped_column(Integer)
    char_end: Mapped[int] = mapped_column(Integer)
    token_count: Mapped[int] = mapped_column(Integer)
    page: Mapped[int | None] = mapped_column(Integer, nullable=True)
    heading: Mapped[str | None] = mapped_column(String(MAX_TITLE_CHARS), nullable=True)
    embedding: Mapped[bytes] = mapped_column(LargeBinary)

    document: Mapped[Document] = relationship(back_populates="chunks")


class IngestRun(Base):
    """One `rag ingest` (or upload) run and its counts; a run left ``running`` was interrupted."""

    __tablename__ = "ingest_runs"
    __table_args__ = NEVER_REUSED

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="running")
    roots: Mapped[list[str]] = mapped_column(JSON, default=list)
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class AnswerRecord(Base):
    """An answer with its full attribution report (the Answer JSON), kept for `rag report` and REST."""

    __tablename__ = "answers"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    question: Mapped[str] = mapped_column(Text)
    answer: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    risk: Mapped[float] = mapped_column(Float)
    flagged: Mapped[bool] = mapped_column(Boolean)
    report: Mapped[dict[str, Any]] = mapped_column(JSON)


class WorkspaceMeta(Base):
    """Facts about the workspace as a whole, one row per key: ``embedder`` and ``embedding_dim`` name
    the model that made the stored embeddings (rag/index/embedder_record.py)."""

    __tablename__ = "workspace_meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
