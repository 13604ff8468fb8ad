"""A compiled segment of the BM25 index (`rag.index.lexical`): documents frozen into a CSR forward index
(for deletes and saving) and a CSC inverted index (for scoring), with a tombstone per row. The index
keeps a large main segment and a small delta of recent additions, and rebuilds either from its
documents' (term ids, term frequencies) when they change.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np


@dataclass
class Segment:
    """Compiled documents: a CSR forward index (for deletes and saving) and a CSC inverted index."""

    ids: np.ndarray  # int64 [n]
    offsets: np.ndarray  # int64 [n+1]: row r's terms are terms[offsets[r]:offsets[r+1]]
    terms: np.ndarray  # int32 [nnz]
    tfs: np.ndarray  # float32 [nnz]
    dl: np.ndarray  # float32 [n]: document length in index terms
    alive: np.ndarray  # bool [n]
    indptr: np.ndarray  # int64 [V+1]: term t's postings are rows[indptr[t]:indptr[t+1]]
    rows: np.ndarray  # int32 [nnz]
    itf: np.ndarray  # float32 [nnz]
    row_of: dict[int, int]

    @classmethod
    def build(
        cls, ids: np.ndarray, offsets: np.ndarray, terms: np.ndarray, tfs: np.ndarray, vocab_size: int
    ) -> Segment:
        n = len(ids)
        lengths = np.diff(offsets)
        row_per_entry = np.repeat(np.arange(n, dtype=np.int32), lengths)
        order = np.argsort(terms, kind="stable")
        counts = np.bincount(terms, minlength=vocab_size) if len(terms) else np.zeros(vocab_size, np.int64)
        indptr = np.zeros(vocab_size + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        dl = np.bincount(row_per_entry, weights=tfs, minlength=n).astype(np.float32)
        return cls(
            ids=ids.astype(np.int64),
            offsets=offsets.astype(np.int64),
            terms=terms.astype(np.int32),
            tfs=tfs.astype(np.float32),
            dl=dl,
            alive=np.ones(n, dtype=bool),
            indptr=indptr,
            rows=row_per_entry[order],
            itf=tfs[order].astype(np.float32),
            row_of={int(i): r for r, i in enumerate(ids.tolist())},
        )

    @classmethod
    def from_docs(cls, docs: Iterable[tuple[int, np.ndarray, np.ndarray]], vocab_size: int) -> Segment:
        """A segment of (chunk id, term ids, term frequencies) documents."""
        return cls.build(*_concat_docs(docs), vocab_size)

    @classmethod
    def empty(cls) -> Segment:
        z64, z32, zf = np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32)
        return cls.build(z64, np.zeros(1, np.int64), z32, zf, 0)

    def doc_terms(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.offsets[row], self.offsets[row + 1]
        return self.terms[a:b], self.tfs[a:b]

    def score(
        self, tids: np.ndarray, weights: np.ndarray, avgdl: float, k1: float, b: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """(chunk ids, BM25 scores) of the live rows matching any term; ``weights`` are the terms'
        idf times their count in the query, ``avgdl`` the whole index's average length."""
        n_terms = len(self.indptr) - 1
        if len(self.ids) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float64)
        scores = np.zeros(len(self.ids), dtype=np.float64)
        for t, w in zip(tids.tolist(), weights.tolist(), strict=True):
            if t >= n_terms:
                continue
            a, e = self.indptr[t], self.indptr[t + 1]
            if a == e:
                continue
            rows = self.rows[a:e]
            tf = self.itf[a:e].astype(np.float64)
            norm = k1 * (1.0 - b + b * self.dl[rows] / avgdl)
            scores[rows] += w * tf * (k1 + 1.0) / (tf + norm)  # rows are unique within one term
        hit = np.flatnonzero((scores > 0) & self.alive)
        return self.ids[hit], scores[hit]


def _concat_docs(
    docs: Iterable[tuple[int, np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    ids: list[int] = []
    terms: list[np.ndarray] = []
    tfs: list[np.ndarray] = []
    for i, t, f in docs:
        ids.append(i)
        terms.append(t)
        tfs.append(f)
    offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum([len(t) for t in terms], out=offsets[1:])
    return (
        np.asarray(ids, dtype=np.int64),
        offsets,
        np.concatenate(terms).astype(np.int32) if terms else np.zeros(0, np.int32),
        np.concatenate(tfs).astype(np.float32) if tfs else np.zeros(0, np.float32),
    )
