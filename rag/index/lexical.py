"""BM25 over chunk ids, kept next to FAISS and fed by the same ingest/delete path.

Why our own sparse index rather than ``bm25s``: bm25s freezes its corpus at ``index()`` time, while
ingest adds and deletes chunks one document at a time. Here documents live in a compiled *main*
segment (CSR forward + CSC inverted arrays) plus a small *delta* of recent additions; deletions
tombstone main rows. Global statistics (df, average length) are exact at every query, so scores do
not drift, and the segments are merged when the delta or the tombstones grow past a fraction of the
index. A full rebuild of 1e5 chunks is a few seconds (tokenising dominates). Terms are
`rag.text`'s: lowercase words less English stopwords, stemmed by Snowball; segments are
`rag.index.lexical_segment`'s.

Persistence is one ``.npz`` plus a ``manifest.json`` (count, id checksum shared with the FAISS
manifest, data sha256, tokenizer version), each written to a temp file and renamed; the manifest is
written last, so a crash between the two renames is caught by the sha256 at load.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Collection, Iterable
from itertools import chain, islice
from pathlib import Path
from typing import Any

import numpy as np

from rag.index.lexical_segment import Segment
from rag.index.vectors import atomic_write, ids_checksum
from rag.text import TOKENIZER_VERSION, normalize_token, term_counts, words

DATA_FILE = "bm25.npz"
MANIFEST_FILE = "manifest.json"
FORMAT = "sightline-bm25"
FORMAT_VERSION = 1


class LexicalIndexError(Exception):
    """A saved lexical index can't be used (missing, corrupt, other format); rebuild it from SQL."""


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
        self._main = Segment.empty()
        self._n_dead = 0  # tombstoned rows in main
        self._pending: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # the delta, not yet compiled
        self._delta: Segment | None = None  # compiled view of _pending, rebuilt lazily
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
        self._main = Segment.from_docs(docs, len(self._vocab))
        self._pending.clear()
        self._delta = None
        self._n_dead = 0

    # ---- search ----
    def _delta_segment(self) -> Segment:
        if self._delta is None:
            docs = ((cid, t, f) for cid, (t, f) in self._pending.items())
            self._delta = Segment.from_docs(docs, len(self._vocab))
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
        parts = [s.score(tids, weights, avgdl, self.k1, self.b) for s in (self._main, self._delta_segment())]
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
        index._main = Segment.build(ids, offsets, terms, tfs, len(vocab_list))
        index._count = len(ids)
        index._total_len = float(tfs.sum())
        if index._count != manifest.get("count") or index.checksum() != manifest.get("checksum"):
            raise LexicalIndexError("lexical index contents disagree with its manifest")
        return index
