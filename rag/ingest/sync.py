"""Folder sync: scan → load → chunk → embed → store (SQL) → index (FAISS + BM25).

Sync semantics: new files are added, changed ones (by sha256) re-chunked and re-embedded, unchanged
ones skipped without touching the model, and files ingested earlier from under a given path that are
gone are deleted. A file whose content (sha256) is already an ``ok`` document at another path is
not chunked or embedded again: it is reported in ``duplicates`` and gets no row, so every run checks
it again (it is ingested once the original is gone or changed). Each document is one SQL
transaction; the derived indexes are updated after the commit and saved at the end (and
periodically), so a run killed at any moment leaves SQL consistent and the indexes repairable from
it at the next run (``IndexSet.reconcile``).
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import select, update

from rag.config import Settings
from rag.index.derived import IndexSet
from rag.index.embedder_record import check_embedder
from rag.ingest.documents import DocumentStore
from rag.ingest.records import (
    Duplicate,
    Examined,
    FileFailure,
    IngestSummary,
    Known,
    Pending,
    ProgressFn,
)
from rag.inputs import MAX_PATH_CHARS
from rag.parse.chunking import Chunker, ChunkerConfig, chunk_document
from rag.parse.scan import ScannedFile, file_sha256, scan
from rag.parse.worker import LoadWorker
from rag.storage.database import Database
from rag.storage.engine import transaction
from rag.storage.orm import Document, IngestRun, utcnow
from rag.storage.queries import counts, documents_under
from rag.storage.writelock import WriteLock
from rag.types import ChunkSpan, LoadError

if TYPE_CHECKING:
    from rag.embed.embedder import Embedder

_EMBED_BATCH_CHUNKS = 512  # embed several documents together: the model is fastest on big batches
SAVE_EVERY_S = 30.0  # save the indexes during long runs so a crash loses little work
_PREFETCH_FILES = 4  # files hashed and parsed ahead of the one being chunked (bounds memory)


class _Abort(Exception):
    """The consumer stopped; the prefetch thread ends quietly."""


class Ingestor:
    def __init__(
        self,
        settings: Settings,
        database: Database,
        lock: WriteLock,
        indexes: IndexSet,
        load_embedder: Callable[[], Embedder],
    ) -> None:
        """``load_embedder`` is called on first need: a distributed run embeds on its workers."""
        self.settings = settings
        self.database = database
        self.lock = lock
        self.indexes = indexes
        self.documents = DocumentStore(database, lock, indexes)
        self._load_embedder = load_embedder
        self._in_run: set[str] = set()  # paths this run scanned: an original among them is re-hashed
        self._embedder_claimed = False  # this run's first stored chunks recorded the embedder

    @cached_property
    def chunker(self) -> Chunker:
        """Made on first use: a distributed run chunks on its workers and never needs it here."""
        cfg = self.settings
        return make_chunker(self._load_embedder(), cfg.chunk_tokens, cfg.chunk_overlap)

    def run(
        self,
        paths: list[Path],
        include: list[str] | None = None,
        exclude: list[str] | None = None,
        progress: ProgressFn | None = None,
    ) -> IngestSummary:
        started = time.perf_counter()
        roots = [p.expanduser().resolve() for p in paths]
        missing = [str(p) for p in roots if not p.exists()]
        if missing:
            raise FileNotFoundError(f"no such file or folder: {', '.join(missing)}")
        summary = IngestSummary()
        with self.lock.held():
            check_embedder(self.database)  # before any chunk of another embedder's is added
            self._close_interrupted_runs()
            self.indexes.reconcile()
            self._remove_stale_temp_files()
            with transaction(self.database.sessions) as s:
                run = IngestRun(roots=[str(r) for r in roots])
                s.add(run)
            unsupported: list[Path] = []
            files = list(scan(roots, include or [], exclude or [], unsupported=unsupported))
            if unsupported:
                summary.skipped["unsupported"] = len(unsupported)
                summary.unsupported = [str(p) for p in unsupported]
            self._in_run = {str(f.path) for f in files}
            self._embedder_claimed = False
            known = self._delete_vanished(roots, {str(f.path) for f in files}, summary)
            self._sync(files, known, summary, progress)
            self.indexes.save()
            with transaction(self.database.sessions) as s:
                summary.documents, summary.chunks = counts(s)
                summary.seconds = round(time.perf_counter() - started, 3)
                db_run = s.get(IngestRun, run.id)
                assert db_run is not None
                db_run.status, db_run.finished_at, db_run.summary = "done", utcnow(), summary.to_dict()
        return summary

    # start-up repairs (under the write lock, so no other writer is mid-run) ---------------------------
    def _close_interrupted_runs(self) -> None:
        """A run still 'running' while we hold the lock was killed: say so in its row."""
        with transaction(self.database.sessions) as s:
            s.execute(
                update(IngestRun)
                .where(IngestRun.status == "running")
                .values(status="interrupted", finished_at=utcnow())
            )

    def _remove_stale_temp_files(self) -> None:
        """Index files (vectors, and BM25 in its subfolder) are written to '.NAME.*.tmp' and renamed;
        a writer killed in between leaves the temporary behind, and only a writer (us, holding the
        lock) ever makes one."""
        for tmp in self.settings.index_dir.glob("**/.*.tmp"):
            tmp.unlink(missing_ok=True)

    # sync ---------------------------------------------------------------------------------------------
    def _delete_vanished(
        self, roots: list[Path], seen: set[str], summary: IngestSummary
    ) -> dict[str, Known]:
        """Delete documents whose files are gone; returns what SQL knows about the remaining ones."""
        known: dict[str, Known] = {}
        for root in roots:
            with transaction(self.database.sessions) as s:
                under = documents_under(s, root)
            for path, doc in under.items():
                on_disk = Path(path)
                if path in seen or (on_disk.exists() and not on_disk.is_dir() and not root.is_file()):
                    # (a file not seen but still on disk was excluded by this run's globs: keep it;
                    # a folder's row is a 'cannot list' failure, gone once the folder can be read)
                    known[path] = Known(doc.id, doc.status, doc.sha256)
                    continue
                if self.documents.delete(doc.id):
                    summary.deleted += 1
        return known

    def _sync(
        self,
        files: list[ScannedFile],
        known: dict[str, Known],
        summary: IngestSummary,
        progress: ProgressFn | None,
    ) -> None:
        """Add, update or record as failed every scanned file (vanished ones are already gone)."""
        cfg = self.settings
        with LoadWorker(cfg.file_timeout_s, max_chars=cfg.max_file_chars) as worker:
            self._sync_files(files, known, worker, summary, progress)

    def _sync_files(
        self,
        files: list[ScannedFile],
        known: dict[str, Known],
        worker: LoadWorker,
        summary: IngestSummary,
        progress: ProgressFn | None,
    ) -> None:
        """Files are hashed and parsed by a prefetch thread (parsing itself runs in ``worker``'s
        process), while this thread chunks, embeds and stores: parsing overlaps with the model."""
        ahead: queue.Queue[Examined | BaseException | None] = queue.Queue(maxsize=_PREFETCH_FILES)
        stop = threading.Event()
        prefetch = threading.Thread(
            target=self._prefetch, args=(files, known, worker, ahead, stop), name="ingest-prefetch"
        )
        prefetch.start()
        try:
            self._consume(ahead, len(files), summary, progress)
        finally:
            stop.set()
            prefetch.join(timeout=1.0)
            if prefetch.is_alive():  # e.g. Ctrl-C while it waits on a slow file: don't wait it out
                worker.interrupt()
                prefetch.join()

    def _prefetch(
        self,
        files: list[ScannedFile],
        known: dict[str, Known],
        worker: LoadWorker,
        out: queue.Queue[Examined | BaseException | None],
        stop: threading.Event,
    ) -> None:
        def put(item: Examined | BaseException | None) -> None:
            while True:
                if stop.is_set():
                    raise _Abort
                try:
                    out.put(item, timeout=0.1)
                    return
                except queue.Full:
                    continue

        try:
            worker.start()
            for f in files:
                put(self._examine(f, known.get(str(f.path)), worker))
            put(None)
        except _Abort:
            return
        except BaseException as exc:  # handed to the consumer, which re-raises it
            with contextlib.suppress(_Abort):
                put(exc)

    def _examine(self, f: ScannedFile, known: Known | None, worker: LoadWorker) -> Examined:
        """Hash, and parse when new or changed; unchanged files are not parsed at all."""
        item = self.check(f, known)
        if item.needs_load:
            try:
                item.doc = worker.load(f.path)
            except (LoadError, OSError) as exc:
                item.error = str(exc) or type(exc).__name__
        return item

    def check(self, f: ScannedFile, known: Known | None) -> Examined:
        """What can be decided without parsing: the file's own problems, its hash, and whether SQL
        already holds it unchanged (``needs_load`` says parsing is next). Runs where SQL is: on the
        driver of a distributed run too."""
        item = Examined(f, known)
        try:
            problem = _unstorable_path(str(f.path))
            item.recordable = problem is None
            if f.error:  # what went wrong first is what the user needs to hear
                raise LoadError(f.error)
            if problem:
                raise LoadError(problem)
            if f.size > self.settings.max_file_bytes:
                raise LoadError(
                    f"file is {f.size:,} bytes, over the {self.settings.max_file_bytes:,}-byte limit "
                    "(max_file_bytes)"
                )
            item.sha256 = file_sha256(f.path)
            if known is not None and known.status == "ok" and known.sha256 == item.sha256:
                item.unchanged = True
        except (LoadError, OSError) as exc:
            item.error = str(exc) or type(exc).__name__
        return item

    def _consume(
        self,
        ahead: queue.Queue[Examined | BaseException | None],
        total: int,
        summary: IngestSummary,
        progress: ProgressFn | None,
    ) -> None:
        pending: list[Pending] = []
        pending_chunks = 0
        last_save = time.monotonic()
        done = 0
        while (item := ahead.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            if progress:
                progress(done, total, str(item.file.path))
            done += 1
            original = self.duplicate_of(item)
            if pending and not item.unchanged and (original or any(p.sha256 == item.sha256 for p in pending)):
                # the batch may hold this content's first copy, or change the document SQL names
                self._commit(pending, summary)
                pending, pending_chunks = [], 0
                original = self.duplicate_of(item)
            if original is not None:
                self.skip_duplicate(item, original, summary)
                continue
            prepared = self._prepare(item, summary)
            if prepared is not None:
                pending.append(prepared)
                pending_chunks += len(prepared.chunks)
            if pending_chunks >= _EMBED_BATCH_CHUNKS:
                self._commit(pending, summary)
                pending, pending_chunks = [], 0
                if time.monotonic() - last_save > SAVE_EVERY_S:
                    self.indexes.save()
                    last_save = time.monotonic()
        self._commit(pending, summary)
        if progress:
            progress(total, total, "")

    def duplicate_of(self, item: Examined) -> Duplicate | None:
        """The ``ok`` document at another path that holds this new or changed file's content, if any.
        An original this run scanned is hashed again: it may have changed since SQL recorded it, and
        then this file is the only copy of that content."""
        if item.unchanged or not item.sha256:
            return None
        path = str(item.file.path)
        query = (
            select(Document.id, Document.path)
            .where(Document.sha256 == item.sha256, Document.status == "ok", Document.path != path)
            .order_by(Document.id)
        )
        with self.database.sessions() as s:
            candidates = list(s.execute(query))
        for doc_id, doc_path in candidates:
            if doc_path not in self._in_run or _holds(Path(doc_path), item.sha256):
                return Duplicate(path, doc_id, doc_path)
        return None

    def skip_duplicate(self, item: Examined, duplicate: Duplicate, summary: IngestSummary) -> None:
        """Report a duplicate; a row it had (its file held other content before) goes with its chunks,
        as a changed file's old chunks always do."""
        if item.known is not None:
            self.documents.delete(item.known.id)
        summary.duplicates.append(duplicate)

    def _prepare(self, item: Examined, summary: IngestSummary) -> Pending | None:
        """Chunk a loaded file; record an unchanged or failed one and return None."""
        if item.unchanged:
            summary.unchanged += 1
            return None
        reason = item.error
        chunks: list[ChunkSpan] = []
        if item.doc is not None and reason is None:
            chunks, reason = chunk_document(self.chunker, item.doc, self.settings.max_file_chunks)
        if reason is not None or item.doc is None:
            self.fail(item, reason or "not loaded", summary)
            return None
        return Pending(item.file, item.sha256, item.doc, chunks, item.known.id if item.known else None)

    def fail(self, item: Examined, reason: str, summary: IngestSummary) -> None:
        """Report a file that could not be ingested, and keep it visible in SQL where it can be."""
        if item.recordable:
            self.documents.record_failure(item.file, item.known, reason)
        summary.failed.append(FileFailure(str(item.file.path), reason))

    def _commit(self, pending: list[Pending], summary: IngestSummary) -> None:
        """Embed a batch of documents together, then store each in its own transaction."""
        if not pending:
            return
        texts = [c.text for p in pending for c in p.chunks]
        vectors = self._load_embedder().encode(texts)
        offset = 0
        for p in pending:
            vecs = vectors[offset : offset + len(p.chunks)]
            offset += len(p.chunks)
            self.store(p, vecs, summary)

    def store(self, p: Pending, vectors: np.ndarray, summary: IngestSummary) -> None:
        """One document and its chunks in one transaction, then into the in-memory indexes."""
        self.documents.store(p, vectors, claim_embedder=not self._embedder_claimed)
        self._embedder_claimed = True  # the one place chunks are written (a Ray run's too)
        if p.existing_id is None:
            summary.added += 1
        else:
            summary.updated += 1


def make_chunker(embedder: Embedder, chunk_tokens: int, overlap_tokens: int) -> Chunker:
    """Chunks sized in the embedder's own tokens, never longer than it embeds without truncating."""
    config = ChunkerConfig(max_tokens=min(chunk_tokens, embedder.max_tokens), overlap_tokens=overlap_tokens)
    return Chunker(embedder.tokenizer, config)


def _holds(path: Path, sha256: str) -> bool:
    """Whether the file at ``path`` has this content now (False when it cannot be read)."""
    try:
        return file_sha256(path) == sha256
    except OSError:
        return False


def _unstorable_path(path: str) -> str | None:
    """Why ``path`` cannot be a row in ``documents`` (None when it can). A file name that is not
    valid UTF-8 reaches Python with lone surrogates, which neither SQLite nor PostgreSQL accepts."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        shown = path.encode("utf-8", "backslashreplace").decode("ascii", "replace")
        return f"file name is not valid UTF-8 ({shown!r}); rename the file to index it"
    if len(path) > MAX_PATH_CHARS:
        return f"path is {len(path):,} characters long, over the {MAX_PATH_CHARS:,} that can be stored"
    return None
