"""Retrieval: dense (FAISS), lexical (BM25) or both fused, under the same metadata filters, turned
into ranked Sources, plus how relevant the best of them really is (the cosine of its stored
embedding to the question: the abstention signal, comparable whatever the mode)."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from rag.config import Settings
from rag.index.derived import IndexSet
from rag.retrieve.fusion import candidate_depth, fuse_hybrid
from rag.storage.database import Database
from rag.storage.queries import chunk_vectors, filtered_chunk_ids, sources_for
from rag.types import RETRIEVAL_MODES, RetrievalMode, Source

if TYPE_CHECKING:
    from rag.embed.embedder import Embedder

MODES = RETRIEVAL_MODES


@dataclass(frozen=True)
class Filters:
    path_prefix: str | None = None
    doc_type: str | None = None
    # chunks never retrieved: `rag calibrate` asks questions whose source is withheld
    exclude_chunk_ids: frozenset[int] = frozenset()


@dataclass(frozen=True)
class Retrieval:
    """What retrieval hands the answer stage, whole."""

    sources: list[Source]
    relevance: float  # best cosine similarity between the query and a retrieved chunk (0 if none)
    retrieve_ms: float = 0.0

    def focused(self, ratio: float) -> Retrieval:
        """The top source and those scoring at least ``ratio`` x its score: what the generator is shown.
        Scores that are not positive (a dense cosine can be) carry no scale: all are kept."""
        if not self.sources or ratio <= 0 or self.sources[0].score <= 0:
            return self
        floor = ratio * self.sources[0].score
        kept = self.sources[:1] + [s for s in self.sources[1:] if s.score >= floor]
        return replace(self, sources=kept)


class Retriever:
    def __init__(self, settings: Settings, database: Database, indexes: IndexSet, embedder: Embedder) -> None:
        """``database``: the chunks' metadata (filters, sources) and stored vectors (relevance)."""
        self.settings = settings
        self.database = database
        self.indexes = indexes
        self.embedder = embedder

    def run(
        self, query: str, k: int, filters: Filters | None = None, mode: RetrievalMode | None = None
    ) -> Retrieval:
        """The top ``k`` sources for ``query``, which its caller has checked (``Rag``, the library's
        edge, with rag.inputs), as it has checked that the configured embedder made the stored vectors
        (rag.index.embedder_record.check_embedder, once per question, before this is called)."""
        t0 = time.perf_counter()
        mode = mode or self.settings.retrieval_mode
        filters = filters or Filters()
        vector = self.embedder.encode([query])[0]
        depth = candidate_depth(k) if mode == "hybrid" else k
        if mode != "lexical":
            self.indexes.vectors  # noqa: B018  (loaded before reading: loading takes the write side)
        if mode != "dense":
            self.indexes.lexical  # noqa: B018
        self.indexes.refresh()
        with self.database.sessions() as s:
            allowed = filtered_chunk_ids(s, filters.path_prefix, filters.doc_type, filters.exclude_chunk_ids)
            with self.indexes.reading():  # an ingest in this process may be adding to the indexes
                dense = self.indexes.vectors.search(vector, depth, allowed) if mode != "lexical" else []
                lexical = self.indexes.lexical.search(query, depth, allowed) if mode != "dense" else []
            if mode == "hybrid":
                cfg = self.settings
                hits = fuse_hybrid(dense, lexical, k, cfg.fusion_method, cfg.fusion_dense_weight)
            else:
                hits = dense or lexical
            sources = sources_for(s, hits[:k])
            relevance = 0.0
            if sources:
                # stored by this embedder (checked by the caller), so as wide as the query's vector
                _, vectors = chunk_vectors(s, np.array([x.chunk_id for x in sources]), len(vector))
                relevance = float((vectors @ vector).max())
        return Retrieval(sources, relevance, (time.perf_counter() - t0) * 1000)
