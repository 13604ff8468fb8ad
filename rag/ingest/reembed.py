"""`rag index rebuild --re-embed`: embed every stored chunk again with the configured embedder.

The way out after changing ``RAG_EMBEDDER`` on a workspace that has chunks (rag.index.embedder_record
refuses to mix the two models). Chunk texts are kept in SQL, so no document is read again. The new
vectors and the new record are written in one transaction: a run killed part-way leaves the old
vectors and the old record, consistent with each other, and the old index still matches them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlalchemy import update

from rag.index.derived import IndexSet
from rag.index.embedder_record import EmbedderRecord, write_record
from rag.storage.database import Database
from rag.storage.engine import transaction
from rag.storage.orm import Chunk
from rag.storage.queries import chunk_ids, chunk_texts
from rag.storage.writelock import WriteLock

if TYPE_CHECKING:
    from rag.embed.embedder import Embedder

BATCH_CHUNKS = 512  # texts read, embedded and written per step: the model is fastest on big batches

ProgressFn = Callable[[int, int], None]  # (chunks done, chunks in all)


def re_embed(
    database: Database,
    lock: WriteLock,
    indexes: IndexSet,
    load_embedder: Callable[[], Embedder],
    progress: ProgressFn | None = None,
) -> int:
    """Re-embed every chunk, record the configured embedder, rebuild both indexes from SQL; returns
    the chunk count. Under the workspace write lock throughout; the model is loaded once it is held
    (a read-only workspace is refused without it)."""
    with lock.held():
        embedder = load_embedder()
        with transaction(database.sessions) as s:
            ids = chunk_ids(s)
            for start in range(0, len(ids), BATCH_CHUNKS):
                pairs = chunk_texts(s, ids[start : start + BATCH_CHUNKS])
                vectors = embedder.encode([text for _, text in pairs])
                rows = [
                    {"id": cid, "embedding": vector.tobytes()}
                    for (cid, _), vector in zip(pairs, vectors, strict=True)
                ]
                if rows:
                    s.execute(update(Chunk), rows)
                if progress:
                    progress(start + len(pairs), len(ids))
            write_record(s, EmbedderRecord(database.settings.embedder_id, embedder.dim))
        return indexes.rebuild()
