"""The derived indexes, FAISS vectors and BM25, kept in step with the database.

The database is the source of truth. On load, and before every write, the indexes are reconciled
with it, so an index left behind by a crash, or edited by hand, is repaired from the embeddings and
texts stored in SQL. Saved indexes are snapshots (rag/index/snapshots.py): vectors and BM25 are loaded
together from the one ``CURRENT`` names. Readers (the API) call ``refresh`` to switch to a snapshot
that a writer in another process published, without a restart, and search inside ``reading()``: an
ingest in the same process changes the indexes under the write side of the same lock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

import faiss
import numpy as np

from rag.config import Settings
from rag.index import ann, snapshots
from rag.index.embedder_record import check_embedder
from rag.index.lexical import LexicalIndex, LexicalIndexError
from rag.index.rwlock import RWLock
from rag.index.vectors import INDEX_FILE, MANIFEST_FILE, VectorIndex, ids_checksum, read_manifest
from rag.storage.database import Database
from rag.storage.queries import chunk_ids, chunk_texts, chunk_vectors
from rag.storage.writelock import WriteLock


@dataclass
class IndexCheck:
    ok: bool
    db_count: int
    index_count: int
    db_checksum: str
    index_checksum: str
    manifest_ok: bool
    lexical_ok: bool

    def describe(self) -> str:
        if self.ok:
            return f"ok: {self.db_count} chunks in SQL, FAISS and BM25 (checksum {self.db_checksum[:12]})"
        return (
            f"MISMATCH: SQL has {self.db_count} chunks (checksum {self.db_checksum[:12]}), FAISS has "
            f"{self.index_count} (checksum {self.index_checksum[:12]})"
            + ("" if self.manifest_ok else ", and the saved manifest does not match the index file")
            + ("" if self.lexical_ok else ", and the BM25 index does not match SQL")
            + "; run `rag index rebuild` (or any `rag ingest`) to repair it from SQL"
        )


class IndexSet:
    def __init__(
        self, settings: Settings, database: Database, lock: WriteLock, embedder_dim: Callable[[], int]
    ) -> None:
        """``database``: the chunks to reconcile with, and the embedder check done before any vector
        is used. ``lock``: held for every save. ``embedder_dim``: the configured embedder's vector
        size (it may load the model), asked only when no saved manifest of that model says."""
        self.settings = settings
        self.database = database
        self.lock = lock
        self._embedder_dim = embedder_dim
        self._indexes = RWLock()  # searches read the in-memory indexes; adds, removes, swaps write
        self._vectors: VectorIndex | None = None
        self._lexical: LexicalIndex | None = None
        self._lease: snapshots.Lease | None = None  # the snapshot the in-memory indexes came from

    def close(self) -> None:
        """Let go of the loaded snapshot, so that a writer may collect it."""
        if self._lease is not None:
            self._lease.release()

    @cached_property
    def dim(self) -> int:
        """From the saved manifest when it was made by the configured model: no model load needed."""
        manifest = read_manifest(snapshots.current_folder(self.settings.index_dir)) or {}
        try:
            if manifest.get("model") == self.settings.embedder_id:
                return int(manifest["dim"])
        except (ValueError, KeyError):
            pass
        return self._embedder_dim()

    def _load_snapshot(self) -> None:
        """Load the current snapshot, vectors and BM25 from the same folder, repair both to SQL, and
        swap them in together (the caller holds the write side of ``_indexes``). The snapshot stays
        leased until the next switch, so no writer collects it under this load."""
        check_embedder(self.database)
        s = self.settings
        lease = snapshots.pin(s.index_dir)
        vi = VectorIndex.open(lease.folder, self.dim, s.embedder_id, s)
        try:
            lx = LexicalIndex.load(lease.folder / snapshots.LEXICAL_DIR)
        except LexicalIndexError:
            lx = LexicalIndex()
        self._reconcile(vi, lx)
        self._vectors, self._lexical = vi, lx
        self._switch_lease(lease)

    def _switch_lease(self, lease: snapshots.Lease) -> None:
        old, self._lease = self._lease, lease
        if old is not None:
            old.release()

    def _loaded(self) -> tuple[VectorIndex, LexicalIndex]:
        """Both in-memory indexes, loaded (and reconciled with SQL) on first use."""
        vi, lx = self._vectors, self._lexical
        if vi is None or lx is None:
            with self._indexes.write():
                if self._vectors is None or self._lexical is None:
                    self._load_snapshot()
            vi, lx = self._vectors, self._lexical
            assert vi is not None and lx is not None
        return vi, lx

    @property
    def loaded_snapshot(self) -> str | None:
        """The name of the snapshot the in-memory indexes came from (None: nothing loaded yet, or
        the old flat layout, or no saved index)."""
        return None if self._lease is None else self._lease.name

    @property
    def vectors(self) -> VectorIndex:
        """The in-memory FAISS index. Read it only inside ``reading()``; change it only through
        this class (under the write side of the same lock)."""
        return self._loaded()[0]

    @property
    def lexical(self) -> LexicalIndex:
        """The in-memory BM25 index, from the same snapshot as ``vectors`` and under the same lock."""
        return self._loaded()[1]

    @contextmanager
    def reading(self) -> Iterator[None]:
        """Hold the indexes still while searching them: searches share this, index writes exclude
        it. Load what the search needs (``vectors``, ``lexical``, ``refresh``) before entering."""
        with self._indexes.read():
            yield

    def _reconcile(self, vi: VectorIndex | None, lx: LexicalIndex | None) -> bool:
        """Repair the given indexes to hold exactly SQL's chunks; True when something changed."""
        changed = 0
        with self.database.sessions() as s:
            db_ids = chunk_ids(s)
            if vi is not None:
                changed += sum(vi.reconcile(db_ids, lambda ids: chunk_vectors(s, ids, vi.dim)))
            if lx is not None:
                changed += sum(lx.reconcile(db_ids, lambda ids: chunk_texts(s, ids)))
        return changed > 0

    def reconcile(self) -> None:
        """Bring the indexes in line with SQL, publishing them if they had drifted (e.g. after a
        crash) or the current snapshot is not SQL's (or is of the old flat layout); then collect the
        snapshots no process uses. A writer runs this first, under the write lock."""
        with self.lock.held(), self._indexes.write():
            vi, lx = self._loaded()
            drifted = self._reconcile(vi, lx)
            current = snapshots.current_name(self.settings.index_dir)
            if drifted or current is None or not self._matches(current, ids_checksum(vi.ids())):
                self.save()
                return
            if self._lease is None or self._lease.name != current:
                # In step with SQL, as the current snapshot is: adopt it, or `refresh` would reload it
                # (from SQL, mid-ingest) under a writer that then adds the same chunks.
                self._switch_lease(snapshots.pin(self.settings.index_dir))
            self._collect()

    def _matches(self, name: str, checksum: str) -> bool:
        """Whether snapshot ``name`` says it holds the chunks ``checksum`` names, in both indexes."""
        manifest = read_manifest(snapshots.folder_of(self.settings.index_dir, name))
        if manifest is None:
            return False
        lexical = manifest.get("lexical")
        return (
            manifest.get("checksum") == checksum
            and manifest.get("model") == self.settings.embedder_id
            and isinstance(lexical, dict)
            and lexical.get("checksum") == checksum
        )

    def _collect(self) -> None:
        s = self.settings
        snapshots.collect(s.index_dir, s.index_keep_snapshots, s.index_trust_leases)

    def refresh(self) -> None:
        """Switch to the current snapshot if another process published a newer one, so the next
        request after a save sees it. Checked again under the write side: a save by a writer in this
        process adopts its snapshot before it lets go, so it never triggers a reload (which would race
        that writer's next additions)."""
        if self._lease is None:
            return  # nothing loaded yet: the first use loads the current snapshot
        index_dir = self.settings.index_dir
        if snapshots.current_name(index_dir) == self._lease.name:
            return
        with self._indexes.write():
            if snapshots.current_name(index_dir) != self._lease.name:
                self._load_snapshot()

    def add(self, ids: np.ndarray, vectors: np.ndarray, texts: list[str]) -> None:
        with self._indexes.write():
            self.vectors.add(ids, vectors)
            self.lexical.add(zip(ids.tolist(), texts, strict=True))

    def remove(self, ids: list[int]) -> None:
        if ids:
            with self._indexes.write():
                self.vectors.remove(ids)
                self.lexical.remove(ids)

    def save(self) -> None:
        """Publish the in-memory indexes as a new snapshot, then collect the ones no process uses.
        This process's lease moves to the new snapshot (it holds what it just wrote)."""
        with self.lock.held():
            with self._indexes.write():
                self._publish()
            self._collect()  # after letting searches in this process go on

    def _publish(self) -> None:
        vi, lx = self._loaded()
        if ann.needs_rebuild(vi.index, vi.count, self.settings):
            self._reconcile(vi, None)  # grown past the ANN threshold: rebuild as IVF
        lease = snapshots.create(self.settings.index_dir)
        try:
            lexical = lx.save(lease.folder / snapshots.LEXICAL_DIR)
            about = {
                "snapshot": lease.name,
                "created": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "lexical": {k: lexical[k] for k in ("count", "checksum", "data_sha256")},
            }
            vi.save(lease.folder, about)
            snapshots.publish(self.settings.index_dir, lease)
        except BaseException:
            lease.release()  # not published: the next collection deletes it
            raise
        self._switch_lease(lease)

    def rebuild(self) -> int:
        """Rebuild both indexes from SQL (stored embeddings and texts); returns the chunk count."""
        check_embedder(self.database)
        with self.lock.held(), self._indexes.write():
            s = self.settings
            vi, lx = VectorIndex(s.index_dir, self.dim, s.embedder_id, s), LexicalIndex()
            self._reconcile(vi, lx)
            self._vectors, self._lexical = vi, lx
            self.save()
            return vi.count

    def check(self) -> IndexCheck:
        """Compare SQL with the current snapshot (what the next reader will load). An index never
        saved (a brand-new workspace) is the empty index: it agrees with an empty SQL."""
        check_embedder(self.database)
        with self.database.sessions() as s:
            db_ids = chunk_ids(s)
        lease = snapshots.pin(self.settings.index_dir)
        try:
            return self._check(db_ids, lease.folder)
        finally:
            lease.release()

    def _check(self, db_ids: np.ndarray, folder: Path) -> IndexCheck:
        empty = {"count": 0, "checksum": ids_checksum([])}
        manifest: dict[str, object] = empty
        index_ids = np.zeros(0, dtype=np.int64)
        if (folder / INDEX_FILE).exists() or (folder / MANIFEST_FILE).exists():
            on_disk = VectorIndex(folder, self.dim, self.settings.embedder_id, self.settings)
            manifest = on_disk.read_manifest() or {}
            if on_disk.index_path.exists():
                try:
                    on_disk.index = faiss.read_index(str(on_disk.index_path))
                    index_ids = on_disk.ids()
                except RuntimeError:
                    pass
        index_sum = ids_checksum(index_ids)
        manifest_ok = manifest.get("count") == len(index_ids) and manifest.get("checksum") == index_sum
        db_sum = ids_checksum(db_ids)
        lexical_dir = folder / snapshots.LEXICAL_DIR
        lexical = LexicalIndex.read_manifest(lexical_dir) or ({} if lexical_dir.exists() else empty)
        lexical_ok = lexical.get("count") == len(db_ids) and lexical.get("checksum") == db_sum
        ok = manifest_ok and lexical_ok and len(db_ids) == len(index_ids) and db_sum == index_sum
        return IndexCheck(ok, len(db_ids), len(index_ids), db_sum, index_sum, manifest_ok, lexical_ok)
