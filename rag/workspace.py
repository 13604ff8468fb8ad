"""A workspace (``RAG_HOME``): the database, the derived indexes, the models, and the write lock.

The database is the source of truth. On open, and before every write, the indexes are reconciled
with it, so an index left behind by a crash, or edited by hand, is repaired from the embeddings and
texts stored in SQL. Saved indexes are snapshots (rag/snapshots.py): vectors and BM25 are loaded
together from the one ``CURRENT`` names. Readers (the API) call ``refresh`` to switch to a snapshot
that a writer in another process published, without a restart, and search inside ``reading()``: an
ingest in the same process changes the indexes under the write side of the same lock.
"""

from __future__ import annotations

import fcntl
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import faiss
import numpy as np
from sqlalchemy import Engine
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.orm import Session, sessionmaker

from rag import ann, embedder_record, snapshots
from rag.config import Settings
from rag.db import (
    UNAVAILABLE_ERRORS,
    make_engine,
    read_only_sqlite_url,
    schema_is_current,
    session_factory,
    transaction,
    unavailable,
)
from rag.index import INDEX_FILE, MANIFEST_FILE, VectorIndex, ids_checksum, read_manifest
from rag.lexical import LexicalIndex, LexicalIndexError
from rag.models import Document
from rag.readonly import ReadOnly, writable
from rag.rwlock import RWLock
from rag.store import chunk_ids, chunk_texts, chunk_vectors, delete_chunks_of

if TYPE_CHECKING:
    from rag.embedding import Embedder


# an unreachable server or unopenable file, an unparseable URL, an unknown scheme
_OPEN_ERRORS: tuple[type[Exception], ...] = (*UNAVAILABLE_ERRORS, ArgumentError, NoSuchModuleError)


class WorkspaceBusy(RuntimeError):
    """Another process holds the write lock and the caller chose not to wait."""


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


class Workspace:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.home_read_only = not writable(self.settings.home_dir)  # reads work; writes are refused
        self.db_read_only: Path | None = None  # the SQLite file, when it cannot be written
        self.engine: Engine = self._open_database()
        self.sessions: sessionmaker[Session] = session_factory(self.engine)
        self._indexes = RWLock()  # searches read the in-memory indexes; adds, removes, swaps write
        self._vectors: VectorIndex | None = None
        self._lexical: LexicalIndex | None = None
        self._lease: snapshots.Lease | None = None  # the snapshot the in-memory indexes came from
        self._writer = threading.RLock()
        self._writer_depth = 0

    def _open_database(self) -> Engine:
        """The engine; a database that cannot be reached or opened is one DatabaseUnavailable."""
        try:
            return self._open_and_migrate()
        except _OPEN_ERRORS as exc:
            raise unavailable(self.settings.db_url, exc) from exc

    def _open_and_migrate(self) -> Engine:
        """The engine, with the schema migrated by one process at a time per workspace: two first
        opens at once (two `rag ingest`, or the API and the CLI) otherwise both create the tables and
        one of them fails. A fresh SQLite file is migrated under a temporary name and renamed into
        place, because pysqlite runs DDL outside any transaction: a process killed mid-migration
        would leave half a schema that no later open could migrate ("table ... already exists").
        A SQLite file that cannot be written is opened read-only, and only if its schema is current."""
        import tempfile

        from sqlalchemy import make_url

        url = make_url(self.settings.db_url)
        db_file = None
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            db_file = Path(str(url.database)).resolve()
            if not (writable(db_file) and writable(db_file.parent)):
                self.db_read_only = db_file
        lock = self._schema_lock()
        try:
            if db_file is not None and self.db_read_only:
                return self._open_read_only(db_file)
            if db_file is not None:
                for stale in db_file.parent.glob(f".{db_file.name}.*.new*"):  # a killed first open's
                    stale.unlink(missing_ok=True)
            if db_file is not None and not db_file.exists():
                db_file.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=db_file.parent, prefix=f".{db_file.name}.", suffix=".new")
                os.close(fd)
                try:
                    fresh = make_engine(url.set(database=tmp).render_as_string(hide_password=False))
                    with fresh.connect() as conn:
                        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")  # all in the main file
                    fresh.dispose()
                    os.replace(tmp, db_file)
                finally:
                    for leftover in (tmp, f"{tmp}-wal", f"{tmp}-shm", f"{tmp}-journal"):
                        Path(leftover).unlink(missing_ok=True)
            return make_engine(self.settings.db_url)
        finally:
            if lock is not None:
                fcntl.flock(lock, fcntl.LOCK_UN)
                os.close(lock)

    def _schema_lock(self) -> int | None:
        """The migration lock, held. In a read-only home it is opened read-only (flock needs no write
        access), so a migration through a writable view of the same folder is still waited for; a
        read-only home without one has nobody to wait for."""
        path = self.settings.home_dir / "schema.lock"
        if self.home_read_only:
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                return None
        else:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd

    def _open_read_only(self, db_file: Path) -> Engine:
        if not db_file.exists():
            raise ReadOnly(
                f"there is no database at {db_file} and {db_file.parent} is read-only: "
                "ingest into this workspace where it can be written first"
            )
        engine = make_engine(read_only_sqlite_url(db_file), migrate=False)
        if not schema_is_current(engine):
            engine.dispose()
            raise ReadOnly(
                f"the database {db_file} is read-only and its schema is not this sightline's: "
                "open the workspace once where it can be written, to migrate it"
            )
        return engine

    def close(self) -> None:
        """Let go of the loaded snapshot (a writer may then collect it) and of the database."""
        if self._lease is not None:
            self._lease.release()
        self.engine.dispose()

    @property
    def stores_answers(self) -> bool:
        """False when the database cannot be written (a read-only SQLite file): answers are given
        but not kept. Known at open, so a caller can say so before generating."""
        return self.db_read_only is None

    def check_writable(self) -> None:
        """Refuse a write up front, before anything changes, naming what cannot be written."""
        where = self.settings.home_dir if self.home_read_only else self.db_read_only
        if where is not None:
            raise ReadOnly(
                f"cannot write to the workspace: {where} is read-only (a read-only mount, or no write "
                "permission)"
            )

    # models ------------------------------------------------------------------------------------------
    @cached_property
    def embedder(self) -> Embedder:
        # Imported here: sentence-transformers takes seconds to import, and `rag index check`,
        # `rag docs list` and the crash tests' checks never need the model.
        from rag.embedding import Embedder

        return Embedder.from_settings(self.settings)

    @cached_property
    def embedding_dim(self) -> int:
        """From the saved manifest when it was made by the configured model: no model load needed."""
        manifest = read_manifest(snapshots.current_folder(self.settings.index_dir)) or {}
        try:
            if manifest.get("model") == self.settings.embedder:
                return int(manifest["dim"])
        except (ValueError, KeyError):
            pass
        return self.embedder.dim

    # indexes -----------------------------------------------------------------------------------------
    def check_embedder(self) -> None:
        """Refuse, before any vector is used, when the configured embedder did not make the stored
        embeddings (rag.embedder_record)."""
        embedder_record.check(self.sessions, self.settings, can_write=self.db_read_only is None)

    def _load_snapshot(self) -> None:
        """Load the current snapshot, vectors and BM25 from the same folder, repair both to SQL, and
        swap them in together (the caller holds the write side of ``_indexes``). The snapshot stays
        leased until the next switch, so no writer collects it under this load."""
        self.check_embedder()
        s = self.settings
        lease = snapshots.pin(s.index_dir)
        vi = VectorIndex.open(lease.folder, self.embedding_dim, s.embedder, s)
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
        """The in-memory FAISS index. Read it only inside ``reading()``; change it only inside
        ``self._indexes.write()``."""
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
        with self.sessions() as s:
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
        with self.write_lock(), self._indexes.write():
            vi, lx = self._loaded()
            drifted = self._reconcile(vi, lx)
            current = snapshots.current_name(self.settings.index_dir)
            if drifted or current is None or not self._matches(current, ids_checksum(vi.ids())):
                self.save_indexes()
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
            and manifest.get("model") == self.settings.embedder
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

    def add_to_indexes(self, ids: np.ndarray, vectors: np.ndarray, texts: list[str]) -> None:
        with self._indexes.write():
            self.vectors.add(ids, vectors)
            self.lexical.add(zip(ids.tolist(), texts, strict=True))

    def remove_from_indexes(self, ids: list[int]) -> None:
        if ids:
            with self._indexes.write():
                self.vectors.remove(ids)
                self.lexical.remove(ids)

    def save_indexes(self) -> None:
        """Publish the in-memory indexes as a new snapshot, then collect the ones no process uses.
        This process's lease moves to the new snapshot (it holds what it just wrote)."""
        with self.write_lock():
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

    def rebuild_indexes(self) -> int:
        """Rebuild both indexes from SQL (stored embeddings and texts); returns the chunk count."""
        self.check_embedder()
        with self.write_lock(), self._indexes.write():
            s = self.settings
            vi, lx = VectorIndex(s.index_dir, self.embedding_dim, s.embedder, s), LexicalIndex()
            self._reconcile(vi, lx)
            self._vectors, self._lexical = vi, lx
            self.save_indexes()
            return vi.count

    def check_indexes(self) -> IndexCheck:
        """Compare SQL with the current snapshot (what the next reader will load). An index never
        saved (a brand-new workspace) is the empty index: it agrees with an empty SQL."""
        self.check_embedder()
        with self.sessions() as s:
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
            on_disk = VectorIndex(folder, self.embedding_dim, self.settings.embedder, self.settings)
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

    # documents ---------------------------------------------------------------------------------------
    def delete_document(self, document_id: int) -> bool:
        """Delete a document and its chunks from SQL, then from the in-memory indexes (callers save)."""
        self.check_embedder()
        with self.write_lock(), transaction(self.sessions) as s:
            doc = s.get(Document, document_id)
            if doc is None:
                return False
            removed = delete_chunks_of(s, document_id)
            s.delete(doc)
        self.remove_from_indexes(removed)
        return True

    # locking -----------------------------------------------------------------------------------------
    @contextmanager
    def write_lock(self, wait: bool = True, notice: TextIO | None = sys.stderr) -> Iterator[None]:
        """One writer per workspace at a time, across processes (a second `rag ingest` waits, saying
        why) and across threads; re-entrant within a thread. A read-only workspace is refused here,
        before anything is written."""
        self.check_writable()
        if not self._writer.acquire(blocking=wait):
            raise WorkspaceBusy(f"another writer is busy with {self.settings.home_dir}")
        try:
            self._writer_depth += 1
            if self._writer_depth > 1:
                yield
                return
            fd = os.open(self.settings.home_dir / "write.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    if not wait:
                        raise WorkspaceBusy(
                            f"another process is writing to {self.settings.home_dir}"
                        ) from None
                    if notice is not None:
                        print(
                            f"waiting for another writer to {self.settings.home_dir} to finish…", file=notice
                        )
                    fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
        finally:
            self._writer_depth -= 1
            self._writer.release()
