"""Queries over documents, chunks and stored answers that more than one stage needs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import Field
from sqlalchemy import ColumnElement, delete, func, select
from sqlalchemy.orm import Session

from rag.storage.orm import AnswerRecord, Chunk, Document
from rag.types import Source

_IN_BATCH = 900  # stay under SQLite's bound-parameter limit


def _batches(ids: list[int]) -> Iterator[list[int]]:
    for i in range(0, len(ids), _IN_BATCH):
        yield ids[i : i + _IN_BATCH]


def path_starts_with(prefix: str) -> ColumnElement[bool]:
    """``Document.path`` begins with ``prefix``, case and all, on every database. LIKE alone differs:
    SQLite's ignores ASCII case (``/WORK`` found ``/work/…``), PostgreSQL's does not; the LIKE stays
    for an index to narrow by, and an exact comparison of the leading characters decides."""
    head = func.substr(Document.path, 1, len(prefix))
    return Document.path.startswith(prefix, autoescape=True) & (head == prefix)


def documents_under(session: Session, root: Path) -> dict[str, Document]:
    """Documents ingested earlier from ``root`` (a folder, or one file), by path (case-sensitive, as the
    file system is: ingesting ``/data/Notes`` never touches ``/data/notes``)."""
    root_str = str(root)
    prefix = root_str.rstrip(os.sep) + os.sep
    query = select(Document).where((Document.path == root_str) | path_starts_with(prefix))
    return {d.path: d for d in session.scalars(query)}


def chunk_ids(session: Session) -> np.ndarray:  # (n,) int64
    return np.fromiter(session.scalars(select(Chunk.id).order_by(Chunk.id)), dtype=np.int64)


def chunk_vectors(session: Session, ids: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Stored embeddings of the given chunks: the index can be rebuilt without the model."""
    out_ids: list[int] = []
    blobs: list[bytes] = []
    for batch in _batches([int(i) for i in ids]):
        for cid, blob in session.execute(select(Chunk.id, Chunk.embedding).where(Chunk.id.in_(batch))):
            out_ids.append(cid)
            blobs.append(blob)
    vectors = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), dim)
    return np.array(out_ids, dtype=np.int64), vectors


def chunk_texts(session: Session, ids: np.ndarray) -> list[tuple[int, str]]:
    """(chunk id, text) of the given chunks, for (re)building the lexical index."""
    out: list[tuple[int, str]] = []
    for batch in _batches([int(i) for i in ids]):
        out.extend(
            (cid, text)
            for cid, text in session.execute(select(Chunk.id, Chunk.text).where(Chunk.id.in_(batch)))
        )
    return out


def delete_chunks_of(session: Session, document_id: int) -> list[int]:
    """Delete a document's chunks; returns their ids so the derived indexes can drop them too."""
    ids = list(session.scalars(select(Chunk.id).where(Chunk.document_id == document_id)))
    session.execute(delete(Chunk).where(Chunk.document_id == document_id))
    return ids


def filtered_chunk_ids(
    session: Session, path_prefix: str | None, doc_type: str | None, exclude: frozenset[int] = frozenset()
) -> np.ndarray | None:
    """Chunk ids allowed by the metadata filters, less ``exclude``; None when no filter is set."""
    if not path_prefix and not doc_type and not exclude:
        return None
    query = select(Chunk.id).join(Document)
    if path_prefix:
        query = query.where(path_starts_with(path_prefix))
    if doc_type:
        query = query.where(Document.doc_type == doc_type.lower().lstrip("."))
    ids = np.fromiter(session.scalars(query), dtype=np.int64)
    # dropped here, not in SQL: a withheld set (every chunk holding a common year) can pass the
    # bound-parameter limit that _batches keeps the other queries under
    return ids[~np.isin(ids, np.fromiter(exclude, dtype=np.int64))] if exclude else ids


def sources_for(session: Session, hits: list[tuple[int, float]]) -> list[Source]:
    """Turn ranked (chunk id, score) hits into Sources, in rank order, skipping ids gone from SQL."""
    ids = [cid for cid, _ in hits]
    rows: dict[int, tuple[Chunk, Document]] = {}
    for batch in _batches(ids):
        for chunk, doc in session.execute(select(Chunk, Document).join(Document).where(Chunk.id.in_(batch))):
            rows[chunk.id] = (chunk, doc)
    sources: list[Source] = []
    for cid, score in hits:
        if cid not in rows:
            continue
        chunk, doc = rows[cid]
        sources.append(
            Source(
                rank=len(sources) + 1,
                chunk_id=chunk.id,
                document_id=doc.id,
                path=doc.path,
                title=doc.title,
                text=chunk.text,
                char_start=chunk.char_start,
                char_end=chunk.char_end,
                score=score,
                doc_type=doc.doc_type,
                page=chunk.page,
                heading=chunk.heading,
            )
        )
    return sources


def mark_stale(session: Session, sources: list[Source]) -> None:
    """Set each stored source's ``stale`` from the chunk as it is now: ``gone`` when no chunk has its id,
    ``changed`` when the chunk's text, document or offsets differ from what the answer saw."""
    ids = [s.chunk_id for s in sources if s.chunk_id > 0]  # 0: a context given with the question
    now: dict[int, tuple[int, str, int, int]] = {}
    for batch in _batches(ids):
        query = select(Chunk.id, Chunk.document_id, Chunk.text, Chunk.char_start, Chunk.char_end)
        for cid, doc_id, text, start, end in session.execute(query.where(Chunk.id.in_(batch))):
            now[cid] = (doc_id, text, start, end)
    for src in sources:
        if src.chunk_id > 0:
            seen = (src.document_id, src.text, src.char_start, src.char_end)
            current = now.get(src.chunk_id)
            src.stale = "gone" if current is None else None if current == seen else "changed"


def counts(session: Session) -> tuple[int, int]:
    """(documents ingested without error, chunks)."""
    docs = session.scalar(select(func.count()).select_from(Document).where(Document.status == "ok")) or 0
    chunks = session.scalar(select(func.count()).select_from(Chunk)) or 0
    return int(docs), int(chunks)


@dataclass
class DocumentInfo:
    """A document as `rag docs list` and `GET /v1/documents` show it."""

    id: int
    path: str
    title: str
    doc_type: str
    mime: str
    size: int
    sha256: str
    status: str
    error: str | None
    chunks: int
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def as_utc(moment: datetime) -> datetime:
    """SQLite keeps no offset: what it returns was written as UTC (``models.utcnow``), so say so."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def document_infos(session: Session, document_id: int | None = None) -> list[DocumentInfo]:
    """Documents with their chunk counts, in one query."""
    n_chunks = func.count(Chunk.id)
    query = select(Document, n_chunks).outerjoin(Chunk).group_by(Document.id).order_by(Document.path)
    if document_id is not None:
        query = query.where(Document.id == document_id)
    return [
        DocumentInfo(
            id=d.id,
            path=d.path,
            title=d.title,
            doc_type=d.doc_type,
            mime=d.mime,
            size=d.size,
            sha256=d.sha256,
            status=d.status,
            error=d.error,
            chunks=int(n),
            updated_at=as_utc(d.updated_at),
        )
        for d, n in session.execute(query)
    ]


@dataclass
class AnswerSummary:
    """A stored answer as a list of recent answers shows it, without its (large) report."""

    id: str
    question: str
    created_at: datetime
    risk: Annotated[float, Field(description="the answer's hallucination risk")]
    flagged: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def answer_summaries(session: Session, limit: int, offset: int = 0) -> tuple[list[AnswerSummary], int]:
    """A page of stored answers, newest first, and how many there are in all."""
    total = session.scalar(select(func.count()).select_from(AnswerRecord)) or 0
    a = AnswerRecord
    query = (
        select(a.id, a.question, a.created_at, a.risk, a.flagged)
        .order_by(a.created_at.desc(), a.id.desc())
        .limit(limit)
        .offset(offset)
    )
    page = [
        AnswerSummary(id_, question, _utc(created), risk, flagged)
        for id_, question, created, risk, flagged in session.execute(query)
    ]
    return page, int(total)


def _utc(when: datetime) -> datetime:
    """SQLite hands back the stored UTC times without their zone."""
    return when if when.tzinfo else when.replace(tzinfo=UTC)
