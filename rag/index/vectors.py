"""The FAISS vector index: derived from the database, keyed by chunk id, saved with a manifest.

Which FAISS index (exact Flat while small, IVF past ``settings.ann_threshold``) is rag.index.ann's policy;
this module keeps whichever one is in use in step with SQL. The index file and a manifest (count,
id checksum, model, kind and parameters) are written into a folder: each save is a new snapshot
folder that rag.index.snapshots publishes (``RAG_HOME/index/snapshots/<name>``). A manifest that disagrees
with its index file, or both with the database, is caught at the next open, and ``reconcile``
repairs the index from the stored embeddings.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from rag.config import Settings
from rag.index import ann

INDEX_FILE = "vectors.faiss"
MANIFEST_FILE = "manifest.json"

log = logging.getLogger(__name__)
_reported: set[Path] = set()  # index files already reported unreadable by this process


def _report_unusable(path: Path, why: str) -> None:
    """Say once per process and file that a saved index is being rebuilt from SQL: readers reopen
    the index on every save, and one line per reload would bury the first."""
    if path not in _reported:
        _reported.add(path)
        log.warning("the saved vector index %s %s; rebuilding it from the embeddings in SQL", path, why)


def ids_checksum(ids: Iterable[int] | np.ndarray) -> str:
    """Order-independent fingerprint of a set of ids, comparable between SQL and FAISS."""
    arr = np.sort(
        np.fromiter(ids, dtype=np.int64) if not isinstance(ids, np.ndarray) else ids.astype(np.int64)
    )
    return hashlib.sha256(arr.astype("<i8").tobytes()).hexdigest()[:32]


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, rename: readers see the old or the new file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_manifest(directory: Path) -> dict[str, Any] | None:
    """The vector manifest saved in ``directory`` (a snapshot folder), or None when it is missing or
    unreadable."""
    try:
        data = json.loads((directory / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class VectorIndex:
    """A FAISS ``IndexIDMap2`` plus the manifest that says what it should contain."""

    def __init__(self, directory: Path, dim: int, model: str, settings: Settings) -> None:
        self.directory = directory
        self.dim = dim
        self.model = model
        self.settings = settings
        self.index: Any = ann.build_faiss_index(dim, 0, settings)  # untyped stubs

    @property
    def index_path(self) -> Path:
        return self.directory / INDEX_FILE

    @property
    def manifest_path(self) -> Path:
        return self.directory / MANIFEST_FILE

    @classmethod
    def open(cls, directory: Path, dim: int, model: str, settings: Settings) -> VectorIndex:
        """Load the saved index, or start an empty one. A file that can't be read, or whose manifest
        disagrees with it, yields an empty index to be filled by ``reconcile`` from the database."""
        vi = cls(directory, dim, model, settings)
        manifest = vi.read_manifest()
        if manifest is None or not vi.index_path.exists():
            return vi
        try:
            loaded = faiss.read_index(str(vi.index_path))
        except RuntimeError as exc:
            _report_unusable(vi.index_path, f"cannot be read ({str(exc).splitlines()[0][:200]})")
            return vi
        if loaded.d != dim or manifest.get("model") != model:
            return vi  # another model's index: expected after changing RAG_EMBEDDER, not damage
        vi.index = loaded
        if manifest.get("count") != vi.count or manifest.get("checksum") != ids_checksum(vi.ids()):
            _report_unusable(vi.index_path, "does not match its manifest")
            vi.index = ann.build_faiss_index(dim, 0, settings)
        return vi

    def read_manifest(self) -> dict[str, Any] | None:
        return read_manifest(self.directory)

    @property
    def count(self) -> int:
        return int(self.index.ntotal)

    def ids(self) -> np.ndarray:  # (n,) int64
        return ann.index_ids(self.index)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids.astype(np.int64))

    def remove(self, ids: Iterable[int]) -> None:
        ann.remove_ids(self.index, np.fromiter(ids, dtype=np.int64))

    def search(
        self, query: np.ndarray, k: int, allowed_ids: np.ndarray | None = None
    ) -> list[tuple[int, float]]:
        """Top-k (chunk id, cosine) for one query vector, optionally restricted to ``allowed_ids``."""
        scores, ids = ann.search(self.index, query, min(k, max(self.count, 1)), allowed_ids)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]

    def save(self, into: Path | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write index then manifest (plus ``extra`` fields) into ``into`` (default: its own folder,
        which ``into`` then becomes), each atomically; returns the manifest. An IVF index's nprobe is
        re-derived for its current size first (the lists grow with it)."""
        ann.retune(self.index, self.settings)
        self.directory = into or self.directory
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write(self.index_path, faiss.serialize_index(self.index).tobytes())
        manifest = {
            "count": self.count,
            "checksum": ids_checksum(self.ids()),
            "dim": self.dim,
            "model": self.model,
            "index": ann.describe_index(self.index),
            **(extra or {}),
        }
        atomic_write(self.manifest_path, json.dumps(manifest, indent=2).encode())
        return manifest

    def reconcile(self, db_ids: np.ndarray, fetch_vectors: Any) -> tuple[int, int]:
        """Make the index hold exactly ``db_ids``: drop extras, add the missing ones with vectors from
        ``fetch_vectors(ids) -> (ids, vectors)``; rebuild it when its kind no longer suits the size
        (Flat grown past the ANN threshold, IVF lists trained for a very different count).
        Returns (added, removed)."""
        if ann.needs_rebuild(self.index, len(db_ids), self.settings):
            ids, vectors = fetch_vectors(db_ids)
            self.index = ann.build_from_vectors(ids, vectors, self.settings)
            return len(ids), 0
        have = self.ids()
        extra = np.setdiff1d(have, db_ids, assume_unique=True)
        missing = np.setdiff1d(db_ids, have, assume_unique=True)
        self.remove(extra.tolist())
        if len(missing):
            ids, vectors = fetch_vectors(missing)
            self.add(ids, vectors)
        return len(missing), len(extra)
