"""Folder sync: scan → load → chunk → embed → store (SQL) → index (FAISS + BM25).

Sync semantics: new files are added, changed ones (by sha256) re-chunked and re-embedded, unchanged
ones skipped without touching the model, and files ingested earlier from under a given path that are
gone are deleted. A file whose content (sha256) is already an ``ok`` document at another path is
not chunked or embedded again: it is reported in ``duplicates`` and gets no row, so every run checks
it again (it is ingested once the original is gone or changed). Each document is one SQL
transaction; the derived indexes are updated after the commit and saved at the end (and
periodically), so a run killed at any moment leaves SQL consistent and the indexes repairable from
it at the next open (``Workspace.reconcile``).
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
from pydantic import ConfigDict, Field
from sqlalchemy import select, update

from rag.chunking import Chunker, ChunkerConfig
from rag.db import transaction
from rag.embedder_record import claim
from rag.loadworker import LoadWorker
from rag.models import Chunk, Document, IngestRun, utcnow
from rag.scan import ScannedFile, file_sha256, scan
from rag.store import counts, delete_chunks_of, documents_under
from rag.types import ChunkSpan, LoadedDocument, LoadError, Section
from rag.workspace import Workspace

if TYPE_CHECKING:
    from rag.embedding import Embedder

ProgressFn = Callable[[int, int, str], None]  # (done, total, current path)

_EMBED_BATCH_CHUNKS = 512  # embed several documents together: the model is fastest on big batches
SAVE_EVERY_S = 30.0  # save the indexes during long runs so a crash loses little work
_PREFETCH_FILES = 4  # files hashed and parsed ahead of the one being chunked (bounds memory)
_MAX_PATH_CHARS = 4096  # documents.path is a String(4096)


@dataclass
class FileFailure:
    path: str
    error: str


@dataclass
class Duplicate:
    """A file not ingested because document ``document_id`` (at ``of_path``) has the same content."""

    path: Annotated[str, Field(description="the file that was not ingested")]
    document_id: Annotated[int, Field(description="the existing document with the same content (sha256)")]
    of_path: Annotated[str, Field(description="that document's path")]


@dataclass
class IngestSummary:
    """What `rag ingest --json` prints (DESIGN.md)."""

    # every field is in every response, so the API's schema requires them all
    __pydantic_config__ = ConfigDict(json_schema_serialization_defaults_required=True)

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    failed: list[FileFailure] = field(default_factory=list)
    duplicates: Annotated[
        list[Duplicate],
        Field(description="files not ingested: their content (sha256) is already a document at another path"),
    ] = field(default_factory=list)
    documents: int = 0
    chunks: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Known:
    """What SQL already holds for a path: enough to decide 'unchanged' without a query per file."""

    id: int
    status: str
    sha256: str


@dataclass
class Examined:
    """One scanned file after the prefetch thread looked at it: unchanged, failed (with the reason),
    or loaded (with its hash and text)."""

    file: ScannedFile
    known: Known | None
    unchanged: bool = False
    error: str | None = None
    recordable: bool = True  # False: the path itself cannot be stored, so no 'failed' row for it
    sha256: str = ""
    doc: LoadedDocument | None = None

    @property
    def needs_load(self) -> bool:
        return not self.unchanged and self.error is None and self.doc is None


@dataclass
class Pending:
    """A loaded and chunked file waiting for its embeddings."""

    file: ScannedFile
    sha256: str
    doc: LoadedDocument
    chunks: list[ChunkSpan]
    existing_id: int | None


class _Abort(Exception):
    """The consumer stopped; the prefetch thread ends quietly."""


class Ingestor:
    def __init__(self, workspace: Workspace) -> None:
        self.ws = workspace
        self._in_run: set[str] = set()  # paths this run scanned: an original among them is re-hashed
        self._embedder_claimed = False  # this run's first stored chunks recorded the embedder

    @cached_property
    def chunker(self) -> Chunker:
        """Made on first use: a distributed run chunks on its workers and never needs it here."""
        cfg = self.ws.settings
        return make_chunker(self.ws.embedder, cfg.chunk_tokens, cfg.chunk_overlap)

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
        with self.ws.write_lock():
            self.ws.check_embedder()  # before any chunk of another embedder's is added
            self._close_interrupted_runs()
            self.ws.reconcile()
            self._remove_stale_temp_files()
            with transaction(self.ws.sessions) as s:
                run = IngestRun(roots=[str(r) for r in roots])
                s.add(run)
            files = list(scan(roots, include or [], exclude or []))
            self._in_run = {str(f.path) for f in files}
            self._embedder_claimed = False
            known = self._delete_vanished(roots, {str(f.path) for f in files}, summary)
            self._sync(files, known, summary, progress)
            self.ws.save_indexes()
            with transaction(self.ws.sessions) as s:
                summary.documents, summary.chunks = counts(s)
                summary.seconds = round(time.perf_counter() - started, 3)
                db_run = s.get(IngestRun, run.id)
                assert db_run is not None
                db_run.status, db_run.finished_at, db_run.summary = "done", utcnow(), summary.to_dict()
        return summary

    # start-up repairs (under the write lock, so no other writer is mid-run) ---------------------------
    def _close_interrupted_runs(self) -> None:
        """A run still 'running' while we hold the lock was killed: say so in its row."""
        with transaction(self.ws.sessions) as s:
            s.execute(
                update(IngestRun)
                .where(IngestRun.status == "running")
                .values(status="interrupted", finished_at=utcnow())
            )

    def _remove_stale_temp_files(self) -> None:
        """Index files (vectors, and BM25 in its subfolder) are written to '.NAME.*.tmp' and renamed;
        a writer killed in between leaves the temporary behind, and only a writer (us, holding the
        lock) ever makes one."""
        for tmp in self.ws.settings.index_dir.glob("**/.*.tmp"):
            tmp.unlink(missing_ok=True)

    # sync ---------------------------------------------------------------------------------------------
    def _delete_vanished(
        self, roots: list[Path], seen: set[str], summary: IngestSummary
    ) -> dict[str, Known]:
        """Delete documents whose files are gone; returns what SQL knows about the remaining ones."""
        known: dict[str, Known] = {}
        for root in roots:
            with transaction(self.ws.sessions) as s:
                under = documents_under(s, root)
            for path, doc in under.items():
                on_disk = Path(path)
                if path in seen or (on_disk.exists() and not on_disk.is_dir() and not root.is_file()):
                    # (a file not seen but still on disk was excluded by this run's globs: keep it;
                    # a folder's row is a 'cannot list' failure, gone once the folder can be read)
                    known[path] = Known(doc.id, doc.status, doc.sha256)
                    continue
                if self.ws.delete_document(doc.id):
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
        cfg = self.ws.settings
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
            if f.size > self.ws.settings.max_file_bytes:
                raise LoadError(
                    f"file is {f.size:,} bytes, over the {self.ws.settings.max_file_bytes:,}-byte limit "
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
                    self.ws.save_indexes()
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
        with self.ws.sessions() as s:
            candidates = list(s.execute(query))
        for doc_id, doc_path in candidates:
            if doc_path not in self._in_run or _holds(Path(doc_path), item.sha256):
                return Duplicate(path, doc_id, doc_path)
        return None

    def skip_duplicate(self, item: Examined, duplicate: Duplicate, summary: IngestSummary) -> None:
        """Report a duplicate; a row it had (its file held other content before) goes with its chunks,
        as a changed file's old chunks always do."""
        if item.known is not None:
            self.ws.delete_document(item.known.id)
        summary.duplicates.append(duplicate)

    def _prepare(self, item: Examined, summary: IngestSummary) -> Pending | None:
        """Chunk a loaded file; record an unchanged or failed one and return None."""
        if item.unchanged:
            summary.unchanged += 1
            return None
        reason = item.error
        chunks: list[ChunkSpan] = []
        if item.doc is not None and reason is None:
            chunks, reason = chunk_document(self.chunker, item.doc, self.ws.settings.max_file_chunks)
        if reason is not None or item.doc is None:
            self.fail(item, reason or "not loaded", summary)
            return None
        return Pending(item.file, item.sha256, item.doc, chunks, item.known.id if item.known else None)

    def fail(self, item: Examined, reason: str, summary: IngestSummary) -> None:
        """Report a file that could not be ingested, and keep it visible in SQL where it can be."""
        if item.recordable:
            self._record_failure(item.file, item.known, reason)
        summary.failed.append(FileFailure(str(item.file.path), reason))

    def _record_failure(self, f: ScannedFile, known: Known | None, reason: str) -> None:
        """Keep the failure visible in `rag docs list`; status 'failed' with no hash makes the next run
        retry it, whatever happened to the file."""
        removed: list[int] = []
        with transaction(self.ws.sessions) as s:
            doc = s.get(Document, known.id) if known else None
            if doc is None:
                doc = Document(
                    path=str(f.path),
                    sha256="",
                    size=f.size,
                    mtime=f.mtime,
                    mime="",
                    doc_type=f.path.suffix.lower().lstrip(".")[:16],
                )
                s.add(doc)
            else:
                removed = delete_chunks_of(s, doc.id)
            doc.status, doc.error, doc.sha256, doc.size, doc.mtime = "failed", reason, "", f.size, f.mtime
        self.ws.remove_from_indexes(removed)

    def _commit(self, pending: list[Pending], summary: IngestSummary) -> None:
        """Embed a batch of documents together, then store each in its own transaction."""
        if not pending:
            return
        texts = [c.text for p in pending for c in p.chunks]
        vectors = self.ws.embedder.encode(texts)
        offset = 0
        for p in pending:
            vecs = vectors[offset : offset + len(p.chunks)]
            offset += len(p.chunks)
            self.store(p, vecs, summary)

    def store(self, p: Pending, vectors: np.ndarray, summary: IngestSummary) -> None:
        """One document and its chunks in one transaction, then into the in-memory indexes."""
        self._store(p, vectors)
        if p.existing_id is None:
            summary.added += 1
        else:
            summary.updated += 1

    def _store(self, p: Pending, vectors: np.ndarray) -> None:
        removed: list[int] = []
        with transaction(self.ws.sessions) as s:
            doc = s.get(Document, p.existing_id) if p.existing_id else None
            if doc is None:
                doc = Document(path=str(p.file.path))
                s.add(doc)
            else:
                removed = delete_chunks_of(s, doc.id)
            doc.sha256, doc.size, doc.mtime = p.sha256, p.file.size, p.file.mtime
            doc.mime, doc.doc_type, doc.title = p.doc.mime, p.doc.doc_type, p.doc.title[:1024]
            doc.status, doc.error = "ok", None
            rows = [
                Chunk(
                    ordinal=i,
                    text=c.text,
                    char_start=c.char_start,
                    char_end=c.char_end,
                    token_count=c.token_count,
                    page=c.page,
                    heading=c.heading[:1024] if c.heading else None,
                    embedding=vectors[i].tobytes(),
                )
                for i, c in enumerate(p.chunks)
            ]
            doc.chunks = rows
            if not self._embedder_claimed:  # the one place chunks are written (a Ray run's too)
                claim(s, self.ws.settings.embedder_id, int(vectors.shape[1]))
            s.flush()
            ids = np.array([r.id for r in rows], dtype=np.int64)
        self._embedder_claimed = True
        self.ws.remove_from_indexes(removed)
        self.ws.add_to_indexes(ids, vectors, [c.text for c in p.chunks])


def make_chunker(embedder: Embedder, chunk_tokens: int, overlap_tokens: int) -> Chunker:
    """Chunks sized in the embedder's own tokens, never longer than it embeds without truncating."""
    config = ChunkerConfig(max_tokens=min(chunk_tokens, embedder.max_tokens), overlap_tokens=overlap_tokens)
    return Chunker(embedder.tokenizer, config)


def chunk_document(
    chunker: Chunker, doc: LoadedDocument, max_chunks: int
) -> tuple[list[ChunkSpan], str | None]:
    """A loaded document's chunks, or none and the reason it cannot be indexed (no text, too many
    chunks): one rule for local and distributed ingest, so both report a file the same way."""
    chunks = chunker.chunk(doc.text, covering_sections(doc.text, doc.sections))
    if not chunks:
        return [], "no text found in the file"
    if len(chunks) > max_chunks:
        limit = f"over the {max_chunks:,}-chunk limit (max_file_chunks)"
        return [], f"the file makes {len(chunks):,} chunks, {limit}"
    return chunks, None


def covering_sections(text: str, sections: list[Section]) -> list[Section]:
    """``sections`` plus one plain section for each stretch of text they leave out. The chunker only
    chunks the sections it is given, and loaders leave text before a document's first heading in no
    section: without this, a Markdown or HTML preamble was never indexed."""
    if not sections:
        return []  # the chunker takes the whole text
    out: list[Section] = []
    previous_end = 0
    for section in [*sections, Section(len(text), len(text))]:
        gap = text[previous_end : section.start]
        if gap.strip():
            start = previous_end + len(gap) - len(gap.lstrip())
            out.append(Section(start, previous_end + len(gap.rstrip())))
        if section.start < section.end:
            out.append(section)
        previous_end = max(previous_end, section.end)
    return out


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
    if len(path) > _MAX_PATH_CHARS:
        return f"path is {len(path):,} characters long, over the {_MAX_PATH_CHARS:,} that can be stored"
    return None
