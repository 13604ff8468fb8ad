"""A workspace without a model, for tests of the indexes and their snapshots (and the processes those
tests start): chunks go into SQL with small stored vectors (DIM wide, the same in every process) and a
word only they have, and into the in-memory indexes through the workspace, the way an ingest stores
them."""

from __future__ import annotations

import zlib

import numpy as np

from rag.config import Settings
from rag.storage.engine import transaction
from rag.storage.orm import Chunk, Document
from rag.workspace import Workspace

DIM = 8


def word(tag: str, ordinal: int) -> str:
    """A word only this chunk has (letters only, so the tokenizer keeps it whole)."""
    return "zq" + tag + "".join(chr(ord("a") + int(d)) for d in str(ordinal))


def vector(tag: str, ordinal: int) -> np.ndarray:
    rng = np.random.default_rng(zlib.crc32(f"{tag}/{ordinal}".encode()))  # the same in every process
    v = rng.standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def open_workspace(settings: Settings) -> Workspace:
    ws = Workspace(settings)
    ws.indexes.__dict__["dim"] = DIM  # no model: the stored vectors are DIM wide
    return ws


def add_document(ws: Workspace, tag: str, n: int) -> list[int]:
    """One document of ``n`` chunks in SQL and in the in-memory indexes (not yet saved)."""
    texts = [f"entry {i} of {tag}: {word(tag, i)}" for i in range(n)]
    vectors = np.stack([vector(tag, i) for i in range(n)])
    with ws.write_lock.held():
        ws.indexes.vectors  # noqa: B018  (loaded first, as an ingest does, or the load would add these from SQL)
        with transaction(ws.database.sessions) as s:
            doc = Document(
                path=f"/{tag}.txt", sha256=tag, size=n, mtime=0.0, mime="text/plain", doc_type="txt"
            )
            doc.chunks = [
                Chunk(ordinal=i, text=t, char_start=0, char_end=len(t), token_count=4, embedding=v.tobytes())
                for i, (t, v) in enumerate(zip(texts, vectors, strict=True))
            ]
            s.add(doc)
            s.flush()
            ids = [c.id for c in doc.chunks]
        ws.indexes.add(np.array(ids, dtype=np.int64), vectors, texts)
    return ids


def finds(ws: Workspace, tag: str, ordinal: int, chunk_id: int) -> tuple[bool, bool]:
    """Whether dense search for the chunk's vector and BM25 for its word both find it first."""
    ws.indexes.vectors  # noqa: B018  (loaded before reading: loading takes the write side)
    with ws.indexes.reading():
        dense = ws.indexes.vectors.search(vector(tag, ordinal), 1)
        lexical = ws.indexes.lexical.search(word(tag, ordinal), 1)
    return bool(dense) and dense[0][0] == chunk_id, bool(lexical) and lexical[0][0] == chunk_id
