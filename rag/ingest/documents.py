"""Writing documents: each document's row and chunks change in one SQL transaction, and only after
the commit in the in-memory indexes, so a crash between the two leaves SQL whole and the indexes
repairable from it (rag.index.derived reconciles them at the next write)."""

from __future__ import annotations

import numpy as np

from rag.index.derived import IndexSet
from rag.index.embedder_record import check_embedder, claim
from rag.ingest.records import Known, Pending
from rag.inputs import MAX_DOC_TYPE_CHARS, MAX_TITLE_CHARS
from rag.parse.scan import ScannedFile
from rag.storage.database import Database
from rag.storage.engine import transaction
from rag.storage.orm import Chunk, Document
from rag.storage.queries import delete_chunks_of
from rag.storage.writelock import WriteLock


class DocumentStore:
    def __init__(self, database: Database, lock: WriteLock, indexes: IndexSet) -> None:
        self.database = database
        self.lock = lock
        self.indexes = indexes

    def delete(self, document_id: int) -> bool:
        """Delete a document and its chunks from SQL, then from the in-memory indexes (callers save)."""
        check_embedder(self.database)
        with self.lock.held(), transaction(self.database.sessions) as s:
            doc = s.get(Document, document_id)
            if doc is None:
                return False
            removed = delete_chunks_of(s, document_id)
            s.delete(doc)
        self.indexes.remove(removed)
        return True

    def store(self, p: Pending, vectors: np.ndarray, claim_embedder: bool) -> None:
        """One document and its chunks (replacing any it had), then into the in-memory indexes.
        ``claim_embedder``: record the configured embedder as the one that made the stored vectors,
        in the same transaction (a run's first stored chunks do, rag.index.embedder_record)."""
        removed: list[int] = []
        with transaction(self.database.sessions) as s:
            doc = s.get(Document, p.existing_id) if p.existing_id else None
            if doc is None:
                doc = Document(path=str(p.file.path))
                s.add(doc)
            else:
                removed = delete_chunks_of(s, doc.id)
            doc.sha256, doc.size, doc.mtime = p.sha256, p.file.size, p.file.mtime
            doc.mime, doc.doc_type, doc.title = p.doc.mime, p.doc.doc_type, p.doc.title[:MAX_TITLE_CHARS]
            doc.status, doc.error = "ok", None
            rows = [
                Chunk(
                    ordinal=i,
                    text=c.text,
                    char_start=c.char_start,
                    char_end=c.char_end,
                    token_count=c.token_count,
                    page=c.page,
                    heading=c.heading[:MAX_TITLE_CHARS] if c.heading else None,
                    embedding=vectors[i].tobytes(),
                )
                for i, c in enumerate(p.chunks)
            ]
            doc.chunks = rows
            if claim_embedder:
                claim(s, self.database.settings.embedder_id, int(vectors.shape[1]))
            s.flush()
            ids = np.array([r.id for r in rows], dtype=np.int64)
        self.indexes.remove(removed)
        self.indexes.add(ids, vectors, [c.text for c in p.chunks])

    def record_failure(self, f: ScannedFile, known: Known | None, reason: str) -> None:
        """Keep the failure visible in `rag docs list`; status 'failed' with no hash makes the next run
        retry it, whatever happened to the file."""
        removed: list[int] = []
        with transaction(self.database.sessions) as s:
            doc = s.get(Document, known.id) if known else None
            if doc is None:
                doc = Document(
                    path=str(f.path),
                    sha256="",
                    size=f.size,
                    mtime=f.mtime,
                    mime="",
                    doc_type=f.path.suffix.lower().lstrip(".")[:MAX_DOC_TYPE_CHARS],
                )
                s.add(doc)
            else:
                removed = delete_chunks_of(s, doc.id)
            doc.status, doc.error, doc.sha256, doc.size, doc.mtime = "failed", reason, "", f.size, f.mtime
        self.indexes.remove(removed)
