"""BM25 over chunk ids, kept next to FAISS and fed by the same ingest/delete path.

Why our own sparse index rather than ``bm25s``: bm25s freezes its corpus at ``index()`` time, while
ingest adds and deletes chunks one document at a time. Here documents live in a compiled *main*
segment (CSR forward + CSC inverted arrays) plus a small *delta* of recent additions; deletions
tombstone main rows. Global statistics (df, average length) are exact at every query, so scores do
not drift, and the segments are merged when the delta or the tombstones grow past a fraction of the
index. A full rebuild of 1e5 chunks is a few seconds (tokenising dominates). Terms are lowercase
words less English stopwords, stemmed by Snowball (PyStemmer, a C library).

Persistence is one ``.npz`` plus a ``manifest.json`` (count, id checksum shared with the FAISS
manifest, data sha256, tokenizer version), each written to a temp file and renamed; the manifest is
written last, so a crash between the two renames is caught by the sha256 at load.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain, islice
from pathlib import Path
from typing import Any

import numpy as np
import Stemmer

from rag.index import atomic_write, ids_checksum
from rag.text import STOPWORDS, words

DATA_FILE = "bm25.npz"
MANIFEST_FILE = "manifest.json"
FORMAT = "sightline-bm25"
FORMAT_VERSION = 1
# Snowball's algorithm for this language (any of Stemmer.algorithms(); the stopwords are English).
STEMMER_LANGUAGE = "english"
# Bump when tokenisation changes: a saved index built with another tokenizer must be rebuilt.
TOKENIZER_VERSION = f"words-nostop-snowball-{STEMMER_LANGUAGE}-2"

class LexicalIndexError(Exception):
    """A saved lexical index can't be used (missing, corrupt, other format); rebuild it from SQL."""


# --------------------------------------------------------------------------------------------------
# Stemming: Snowball (PyStemmer). One stemmer per thread: a PyStemmer object is not thread-safe, and
# searches tokenise their queries on the retrieval pool's threads.

_stemmers = threading.local()


def stem(word: str) -> str:
    """Snowball stem of one lowercase word (STEMMER_LANGUAGE)."""
    stemmer = getattr(_stemmers, "stemmer", None)
    if stemmer is None:
        stemmer = _stemmers.stemmer = Stemmer.Stemmer(STEMMER_LANGUAGE, 0)  # 0: no cache (ours below)
    return str(stemmer.stemWord(word))


@lru_cache(maxsize=500_000)
def normalize_token(token: str) -> str | None:
    """Lowercase token → index term, or None for a stopword. Cached: vocabularies are Zipfian."""
    if token in STOPWORDS:
        return None
    return stem(token)


def term_counts(text: str) -> Counter[str]:
    """Term frequencies of ``text`` after lowercasing, word splitting, stopwords and stemming."""
    raw = Counter(words(text))
    out: Counter[str] = Counter()
    for tok, n in raw.items():
        term = normalize_token(tok)
        if term is not None:
            out[term] += n
    return out


def tokenize(text: str) -> list[str]:
    """The index terms of ``text`` in order (for inspection and tests; indexing uses ``term_counts``)."""
    return [t for t in (normalize_token(tok) for tok in words(text)) if t is not None]


# --------------------------------------------------------------------------------------------------
# Index


@dataclass
class _Segment:
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
    ) -> _Segment:
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
    def empty(cls) -> _Segment:
        z64, z32, zf = np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32)
        return cls.build(z64, np.zeros(1, np.int64), z32, zf, 0)

    def doc_terms(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.offsets[row], self.offsets[row + 1]
        return self.terms[a:b], self.tfs[a:b]


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


class _TokenIds(dict[str, int]):
    """Raw lowercase token → term id (-1 for a stopword), adding new terms to ``vocab`` on first
    sight. A dict with ``__missing__`` so that mapping a batch of tokens runs at C speed."""

    def __init__(self, vocab: dict[str, int]) -> None:
        super().__init__()
        self.vocab = vocab

    def __missing__(self, token: str) -> int:
        term = normalize_token(token)
        tid = -1 if term is None else self.vocab.setdefault(term, len(self.vocab))
        self[token] = tid
        return tid


class LexicalIndex:
    """BM25 (Lucene's variant: idf = ln(1 + (N - df + .5)/(df + .5))) over chunk ids.

    ``add`` with an id already present replaces that document. Not thread-safe: guard writers and
    readers with the same lock as the vector index.
    """

    def __init__(self, k1: float = 1.2, b: float = 0.75) -> None:
        self.k1 = float(k1)
        self.b = float(b)
        self._reset()

    def _reset(self) -> None:
        self._vocab: dict[str, int] = {}
        self._tok2tid = _TokenIds(self._vocab)  # raw token -> term id (-1: stopword), memoised
        self._df = np.zeros(1024, dtype=np.int64)
        self._main = _Segment.empty()
        self._n_dead = 0  # tombstoned rows in main
        self._pending: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # the delta, not yet compiled
        self._delta: _Segment | None = None  # compiled view of _pending, rebuilt lazily
        self._count = 0
        self._total_len = 0.0

    # ---- size and ids ----
    def __len__(self) -> int:
        return self._count

    def __contains__(self, chunk_id: object) -> bool:
        return isinstance(chunk_id, int | np.integer) and (
            int(chunk_id) in self._pending or self._main_row(int(chunk_id)) is not None
        )

    def ids(self) -> np.ndarray:
        """All live chunk ids (int64, unordered)."""
        main = self._main.ids[self._main.alive]
        pend = np.fromiter(self._pending.keys(), dtype=np.int64, count=len(self._pending))
        return np.concatenate([main, pend])

    def checksum(self) -> str:
        return ids_checksum(self.ids())

    def _main_row(self, chunk_id: int) -> int | None:
        row = self._main.row_of.get(chunk_id)
        return row if row is not None and self._main.alive[row] else None

    # ---- mutation ----
    def _encode(self, texts: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Texts → per-document (term ids, term frequencies), vectorised over the batch: the Python
        work is one regex call per text and one dict lookup per token."""
        toks = [words(t) for t in texts]
        lengths = np.fromiter(map(len, toks), dtype=np.int64, count=len(toks))
        flat = np.fromiter(
            map(self._tok2tid.__getitem__, chain.from_iterable(toks)),
            dtype=np.int64,
            count=int(lengths.sum()),
        )
        docs = np.repeat(np.arange(len(texts), dtype=np.int64), lengths)
        keep = flat >= 0
        vsize = max(len(self._vocab), 1)
        keys, counts = np.unique(docs[keep] * vsize + flat[keep], return_counts=True)
        doc_of, tid_of = np.divmod(keys, vsize)
        bounds = np.searchsorted(doc_of, np.arange(len(texts) + 1))
        tids, tfs = tid_of.astype(np.int32), counts.astype(np.float32)
        if len(self._vocab) > len(self._df):
            grown = np.zeros(max(len(self._vocab), 2 * len(self._df)), dtype=np.int64)
            grown[: len(self._df)] = self._df
            self._df = grown
        return [(tids[bounds[i] : bounds[i + 1]], tfs[bounds[i] : bounds[i + 1]]) for i in range(len(texts))]

    def add(self, items: Iterable[tuple[int, str]], batch_size: int = 4096, merge: bool = True) -> int:
        """Index (chunk id, text) pairs; an id already present is replaced. Returns how many.
        ``merge=False`` defers segment merging (bulk loads call ``compact`` once at the end)."""
        n = 0
        it = iter(items)
        while batch := list(islice(it, batch_size)):
            encoded = self._encode([text for _, text in batch])
            for (chunk_id, _), (tids, tfs) in zip(batch, encoded, strict=True):
                cid = int(chunk_id)
                self._remove_one(cid)
                self._pending[cid] = (tids, tfs)
                self._df[tids] += 1
                self._count += 1
                self._total_len += float(tfs.sum())
            n += len(batch)
            self._delta = None
            if merge:
                self._maybe_merge()
        return n

    def _remove_one(self, cid: int) -> bool:
        pend = self._pending.pop(cid, None)
        if pend is not None:
            tids, tfs = pend
            self._delta = None
        else:
            row = self._main_row(cid)
            if row is None:
                return False
            tids, tfs = self._main.doc_terms(row)
            self._main.alive[row] = False
            self._n_dead += 1
        self._df[tids] -= 1
        self._count -= 1
        self._total_len -= float(tfs.sum())
        return True

    def remove(self, ids: Iterable[int]) -> int:
        """Drop chunk ids (unknown ids are ignored). Returns how many were present."""
        n = sum(self._remove_one(int(i)) for i in ids)
        if n:
            self._maybe_merge()
        return n

    def clear(self) -> None:
        self._reset()

    def _maybe_merge(self) -> None:
        """Fold the delta and the tombstones into main once either is a sizeable share of the index."""
        live_main = len(self._main.ids) - self._n_dead
        limit = max(1024, live_main // 8)
        if len(self._pending) > limit or self._n_dead > max(1024, len(self._main.ids) // 4):
            self.compact()

    def compact(self) -> None:
        """Rebuild main from every live document (drops tombstones and the delta)."""
        m = self._main
        live = np.flatnonzero(m.alive)
        docs: list[tuple[int, np.ndarray, np.ndarray]] = [(int(m.ids[r]), *m.doc_terms(int(r))) for r in live]
        docs.extend((cid, t, f) for cid, (t, f) in self._pending.items())
        self._main = _Segment.build(*_concat_docs(docs), len(self._vocab))
        self._pending.clear()
        self._delta = None
        self._n_dead = 0

    # ---- search ----
    def _delta_segment(self) -> _Segment:
        if self._delta is None:
            docs = ((cid, t, f) for cid, (t, f) in self._pending.items())
            self._delta = _Segment.build(*_concat_docs(docs), len(self._vocab))
        return self._delta

    def _query_terms(self, query: str) -> tuple[np.ndarray, np.ndarray]:
        counts = term_counts(query)
        known = [(self._vocab[t], n) for t, n in counts.items() if t in self._vocab]
        if not known:
            return np.zeros(0, np.int64), np.zeros(0, np.float64)
        tids = np.array([t for t, _ in known], dtype=np.int64)
        qtf = np.array([n for _, n in known], dtype=np.float64)
        df = self._df[tids].astype(np.float64)
        keep = df > 0
        idf = np.log1p((self._count - df[keep] + 0.5) / (df[keep] + 0.5))
        return tids[keep], idf * qtf[keep]

    def _score_segment(
        self, seg: _Segment, tids: np.ndarray, weights: np.ndarray, avgdl: float
    ) -> tuple[np.ndarray, np.ndarray]:
        n_terms = len(seg.indptr) - 1
        if len(seg.ids) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float64)
        scores = np.zeros(len(seg.ids), dtype=np.float64)
        k1, b = self.k1, self.b
        for t, w in zip(tids.tolist(), weights.tolist(), strict=True):
            if t >= n_terms:
                continue
            a, e = seg.indptr[t], seg.indptr[t + 1]
            if a == e:
                continue
            rows = seg.rows[a:e]
            tf = seg.itf[a:e].astype(np.float64)
            norm = k1 * (1.0 - b + b * seg.dl[rows] / avgdl)
            scores[rows] += w * tf * (k1 + 1.0) / (tf + norm)  # rows are unique within one term
        hit = np.flatnonzero((scores > 0) & seg.alive)
        return seg.ids[hit], scores[hit]

    def search(
        self, query: str, k: int, allowed_ids: Collection[int] | np.ndarray | None = None
    ) -> list[tuple[int, float]]:
        """Top-k (chunk id, BM25 score), best first, ties by id; only ``allowed_ids`` when given.

        Documents sharing no term with the query are never returned (score 0 is not a match).
        """
        if k <= 0 or self._count == 0:
            return []
        tids, weights = self._query_terms(query)
        if len(tids) == 0:
            return []
        avgdl = max(self._total_len / self._count, 1e-9)
        parts = [self._score_segment(s, tids, weights, avgdl) for s in (self._main, self._delta_segment())]
        ids = np.concatenate([p[0] for p in parts])
        scores = np.concatenate([p[1] for p in parts])
        if allowed_ids is not None:
            allowed = (
                allowed_ids
                if isinstance(allowed_ids, np.ndarray)
                else np.fromiter(allowed_ids, dtype=np.int64, count=len(allowed_ids))
            )
            mask = np.isin(ids, allowed)
            ids, scores = ids[mask], scores[mask]
        if len(ids) > k:
            # keep everything tied with the k-th score so the id tie-break below is exact
            kth = np.partition(scores, len(scores) - k)[len(scores) - k]
            mask = scores >= kth
            ids, scores = ids[mask], scores[mask]
        order = np.lexsort((ids, -scores))[:k]
        return [(int(ids[i]), float(scores[i])) for i in order]

    # ---- building from the database ----
    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[int, str]], k1: float = 1.2, b: float = 0.75) -> LexicalIndex:
        """A fresh index over (chunk id, text) pairs, e.g. streamed from the chunks table."""
        index = cls(k1=k1, b=b)
        index.add(pairs, merge=False)
        index.compact()
        return index

    def reconcile(self, db_ids: np.ndarray | Collection[int], fetch_texts: Any) -> tuple[int, int]:
        """Make the index hold exactly ``db_ids``: drop extras, add the missing with texts from
        ``fetch_texts(ids) -> Iterable[(id, text)]``. Returns (added, removed)."""
        want = np.asarray(list(db_ids) if not isinstance(db_ids, np.ndarray) else db_ids, dtype=np.int64)
        have = self.ids()
        extra = np.setdiff1d(have, want)
        missing = np.setdiff1d(want, have)
        removed = self.remove(extra.tolist())
        added = self.add(fetch_texts(missing)) if len(missing) else 0
        return added, removed

    # ---- persistence ----
    def manifest(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "tokenizer": TOKENIZER_VERSION,
            "count": self._count,
            "checksum": self.checksum(),
            "k1": self.k1,
            "b": self.b,
        }

    def save(self, directory: Path) -> dict[str, Any]:
        """Write ``bm25.npz`` then ``manifest.json`` atomically into ``directory``; returns the manifest."""
        self.compact()
        m = self._main
        vocab = np.frombuffer(json.dumps(list(self._vocab)).encode(), dtype=np.uint8)
        buf = io.BytesIO()
        np.savez(buf, ids=m.ids, offsets=m.offsets, terms=m.terms, tfs=m.tfs, vocab=vocab)
        data = buf.getvalue()
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write(directory / DATA_FILE, data)
        manifest = {**self.manifest(), "data_sha256": hashlib.sha256(data).hexdigest()}
        atomic_write(directory / MANIFEST_FILE, json.dumps(manifest, indent=2).encode())
        return manifest

    @staticmethod
    def read_manifest(directory: Path) -> dict[str, Any] | None:
        try:
            data = json.loads((directory / MANIFEST_FILE).read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    @classmethod
    def load(cls, directory: Path) -> LexicalIndex:
        """Read a saved index; raises LexicalIndexError when it is missing, torn or of another format.
        The caller then compares ``len``/``checksum()`` with the database and reconciles."""
        manifest = cls.read_manifest(directory)
        if manifest is None:
            raise LexicalIndexError(f"no readable {MANIFEST_FILE} in {directory}")
        if (manifest.get("format"), manifest.get("version"), manifest.get("tokenizer")) != (
            FORMAT,
            FORMAT_VERSION,
            TOKENIZER_VERSION,
        ):
            raise LexicalIndexError("lexical index was written by another format or tokenizer version")
        try:
            data = (directory / DATA_FILE).read_bytes()
        except OSError as e:
            raise LexicalIndexError(f"cannot read {DATA_FILE}: {e}") from e
        if hashlib.sha256(data).hexdigest() != manifest.get("data_sha256"):
            raise LexicalIndexError(f"{DATA_FILE} does not match its manifest (interrupted save?)")
        try:
            with np.load(io.BytesIO(data)) as z:
                ids, offsets, terms, tfs = z["ids"], z["offsets"], z["terms"], z["tfs"]
                vocab_list = json.loads(z["vocab"].tobytes().decode())
        except (OSError, ValueError, KeyError) as e:
            raise LexicalIndexError(f"corrupt {DATA_FILE}: {e}") from e
        index = cls(k1=float(manifest.get("k1", 1.2)), b=float(manifest.get("b", 0.75)))
        index._vocab = {t: i for i, t in enumerate(vocab_list)}
        index._tok2tid = _TokenIds(index._vocab)
        index._df = np.bincount(terms, minlength=max(len(vocab_list), 1)).astype(np.int64)
        index._main = _Segment.build(ids, offsets, terms, tfs, len(vocab_list))
        index._count = len(ids)
        index._total_len = float(tfs.sum())
        if index._count != manifest.get("count") or index.checksum() != manifest.get("checksum"):
            raise LexicalIndexError("lexical index contents disagree with its manifest")
        return index
