"""What the routes call: one process's ``Rag`` and the threads its work runs on, so that each route stays
a line or two. Responses are ``rag``'s own types (Answer, Source, DocumentInfo, ...); the events of a
streamed answer are api.streaming's.

Threads: uploads and deletions run one at a time on a writer thread of their own: they take the
workspace write lock, which a `rag ingest` in another process may hold for minutes, and only that
thread ever waits for it (at most ``max_queued_writes`` requests queue for it; past that they get 503
with Retry-After at once). Waiting in the shared pool instead let one slow upload and ~40 small ones
hold every worker thread and freeze every route, /healthz included.
The decoder (ask, attribute, the start-up model load) runs on one dedicated thread. Requests
queue for it instead of splitting the cores between several generations, and the event loop,
/healthz, /metrics and search never wait behind a long answer. Searches run on a pool of one thread
per core: twenty concurrent searches queue cheaply on the event loop rather than as twenty threads
fighting the event loop for the GIL and the embedder for the cores. Within
that thread nothing can touch another request's KV cache: the Generator copies its shared prefix
cache into a fresh cache per request and never writes the shared one.

State: everything a request needs is in SQL or re-read from disk (retrieval calls
``IndexSet.refresh``, which picks up indexes another process saved), so any number of worker
processes can serve the same workspace.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from types import FrameType
from typing import Any, TypeVar

from fastapi import HTTPException, UploadFile
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import Receive

from api.metrics import Metrics
from api.schemas import (
    AnswerList,
    AskRequest,
    AttributeRequest,
    DocumentList,
    FiltersIn,
    Health,
    IngestSummaryOut,
    SearchRequest,
    SearchResponse,
    UploadedOut,
    UploadStatus,
)
from api.streaming import (
    BUSY_RETRY_AFTER_S,
    OnSources,
    OnToken,
    answer_events,
    check_wanted,
    disconnected,
    retrieved,
)
from api.uploads import StoredUpload, store, upload_suffix
from rag.core import Rag
from rag.index.embedder_record import EmbedderMismatch
from rag.readonly import ReadOnly
from rag.retrieve.retriever import Filters
from rag.storage.engine import DATABASE_DOWN, DatabaseUnavailable, failure_reason
from rag.storage.orm import Document
from rag.storage.queries import DocumentInfo, counts, documents_under
from rag.types import Answer, Attribution, BadInput

logger = logging.getLogger("sightline.api")
T = TypeVar("T")

DATABASE_RETRY_AFTER_S = 5  # Retry-After on a 503 for an unavailable database
_PROBE_EVERY_S = 1.0  # /healthz asks the database at most this often...
_PROBE_DEADLINE_S = 2.0  # ...and reports it degraded when it does not answer within this


def database_detail(exc: BaseException) -> str:
    """One line for a database that cannot be used right now (no URL: clients need not see it)."""
    reason = exc.reason if isinstance(exc, DatabaseUnavailable) else failure_reason(exc)
    return f"the database is unavailable ({reason}); retry later"


class ClientDisconnected(Exception):
    """The client of a non-streaming ask left before its answer was ready (logged as 499)."""


def _filters(given: FiltersIn | None) -> Filters | None:
    return given.to_filters() if given else None


def known_failure(exc: Exception) -> tuple[int, Any] | None:
    """The status and detail of an error that is not our bug, or None: the caller's input (422), or a
    workspace that cannot do this as configured (503: the database is down, the home is read-only, or
    its vectors are another embedder's; nothing in the request is wrong). The app's error handlers
    and a streamed answer's ``error`` event both answer from it."""
    if isinstance(exc, BadInput):
        return 422, str(exc)
    if isinstance(exc, HTTPException):
        return exc.status_code, exc.detail
    if isinstance(exc, DATABASE_DOWN):
        return 503, database_detail(exc)
    if isinstance(exc, ReadOnly | EmbedderMismatch):
        return 503, str(exc)
    return None


def _upload_status(path: str, failed: set[str], duplicates: dict[str, int]) -> UploadStatus:
    if path in duplicates:
        return "duplicate"
    return "failed" if path in failed else "ok"


class Service:
    def __init__(self, rag: Rag, load_models: bool = True) -> None:
        self.rag = rag
        self.settings = rag.settings
        self.metrics = Metrics(self.counts)
        self.load_models = load_models
        # one thread per ask that may decode at once: with batching, they wait on the shared batch
        self.generation = ThreadPoolExecutor(max_workers=rag.settings.batch_max,
                                             thread_name_prefix="sightline-generate")
        self.retrieval = ThreadPoolExecutor(
            max_workers=os.cpu_count() or 2, thread_name_prefix="sightline-search"
        )
        self.writing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sightline-write")
        self._writes_queued = 0  # submitted to the writer thread and not finished (guarded below)
        self._writes_lock = threading.Lock()
        self.warming = load_models
        self.load_error: str | None = None
        self.probing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sightline-db-probe")
        self._probe: asyncio.Future[str | None] | None = None
        self._probed_at = -_PROBE_EVERY_S
        self.database_problem: str | None = None
        self.stopping = threading.Event()  # set on SIGTERM/SIGINT: generations end at their next token

    # lifecycle -----------------------------------------------------------------------------------------
    def start(self) -> None:
        """Load the models in the background: the port answers at once, /healthz says when ready, and
        asks queue behind the load on the generation thread. Leftover uploads are cleared first on
        the writer thread, so before any new upload."""
        self.writing.submit(self._remove_orphan_uploads)
        if self.load_models:
            self.generation.submit(self._warm_up)
        self._stop_generating_on_signals()

    def _stop_generating_on_signals(self) -> None:
        """Chain a handler before uvicorn's for SIGTERM and SIGINT. uvicorn alone stops accepting and
        then waits for running requests, so a shutdown waited for a whole answer; this ends every
        generation at its next token (the client gets a 503) and the drain is quick. Only the main
        thread may set handlers: a server run in a thread (tests) is stopped by ``close``."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(sig)

            def handler(signum: int, frame: FrameType | None, previous: Any = previous) -> None:
                self.stopping.set()
                if callable(previous):
                    previous(signum, frame)

            signal.signal(sig, handler)

    def close(self) -> None:
        self.stopping.set()
        self.generation.shutdown(wait=False, cancel_futures=True)
        self.retrieval.shutdown(wait=False, cancel_futures=True)
        self.probing.shutdown(wait=False, cancel_futures=True)
        self.writing.shutdown(wait=False, cancel_futures=True)

    def _warm_up(self) -> None:
        try:
            try:
                self.rag.search("warm up", k=1)  # the embedder, the index and the database
            except EmbedderMismatch as exc:  # searches answer 503 with this line; answers need the rest
                logger.warning("%s", exc)
            self.rag.load_generator()
        except Exception as exc:
            logger.exception("loading the models failed")
            self.load_error = f"loading the models failed: {type(exc).__name__}: {exc}"
        finally:
            self.warming = False
            self.metrics.generator_loaded.set(int(self.rag.generator_loaded))

    async def health(self) -> Health:
        problem = await self.probe_database()
        status = "error" if self.load_error else "degraded" if problem else "ok"
        if status == "ok" and self.warming:
            status = "loading"
        return Health(
            status=status,
            ready=status == "ok",
            generator_loaded=self.rag.generator_loaded,
            detail=self.load_error or problem,
            pid=os.getpid(),
        )

    async def probe_database(self) -> str | None:
        """Why the database cannot be used right now, or None. One probe at a time, on its own thread
        (never the shared pool), at most once per second; one that hangs counts as a failure."""
        loop = asyncio.get_running_loop()
        if self._probe is None and loop.time() - self._probed_at >= _PROBE_EVERY_S:
            self._probe = asyncio.wrap_future(self.probing.submit(self._ping_database))
            self._probed_at = loop.time()
        if self._probe is not None:
            try:
                self.database_problem = await asyncio.wait_for(asyncio.shield(self._probe), _PROBE_DEADLINE_S)
            except TimeoutError:
                self.database_problem = f"the database did not answer within {_PROBE_DEADLINE_S:g} s"
                return self.database_problem  # the probe goes on; the next call waits for it again
            self._probe = None
        return self.database_problem

    def _ping_database(self) -> str | None:
        """A read of a real table (SQLite answers ``SELECT 1`` without opening its file)."""
        try:
            with self.rag.workspace.database.engine.connect() as conn:
                conn.execute(select(Document.id).limit(1))
        except SQLAlchemyError as exc:
            return database_detail(exc)
        return None

    def counts(self) -> tuple[int, int]:
        """(documents, chunks) from SQL, for /metrics."""
        with self.rag.workspace.database.sessions() as s:
            return counts(s)

    async def _validate(self, req: AskRequest | AttributeRequest) -> None:
        """Every 4xx an ask or attribution can earn, before it queues for the generation thread (and
        before a stream has sent its 200)."""
        if isinstance(req, AskRequest):
            await run_in_threadpool(self._check_generator, req.question)
        else:
            await run_in_threadpool(self._check_generator, req.question, req.answer, req.context)

    async def _on_generation_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.generation, partial(fn, *args))

    async def _on_retrieval_thread(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.retrieval, partial(fn, *args, **kwargs))

    async def _on_writer_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a write on the writer thread; 503 + Retry-After when ``max_queued_writes`` are already
        queued (the count drops when a job finishes, whether or not its client is still there)."""
        limit = self.settings.max_queued_writes
        with self._writes_lock:
            if self._writes_queued >= limit:
                raise HTTPException(
                    503,
                    f"busy: {limit} uploads or deletions are already queued; retry shortly",
                    headers={"Retry-After": str(BUSY_RETRY_AFTER_S)},
                )
            self._writes_queued += 1

        def job() -> T:
            try:
                return fn(*args)
            finally:
                with self._writes_lock:
                    self._writes_queued -= 1

        return await asyncio.wrap_future(self.writing.submit(job))

    def _check_generator(self, question: str, answer: str | None = None, context: str | None = None) -> None:
        """503 when the generator could not load; 422 (before any stream starts) for text that would
        not fit the decoder's budget."""
        if self.load_error:
            raise HTTPException(503, self.load_error)
        self.rag.load_generator().generator.check_lengths(question, answer, context)

    # retrieval and answers -----------------------------------------------------------------------------
    async def search(self, req: SearchRequest) -> SearchResponse:
        filters = _filters(req.filters)
        sources = await self._on_retrieval_thread(self.rag.search, req.query, req.k, filters, mode=req.mode)
        return SearchResponse(results=sources)

    def _answer(
        self,
        req: AskRequest,
        on_sources: OnSources | None = None,
        on_token: OnToken | None = None,
    ) -> Answer:
        answer = self.rag.ask(
            req.question,
            req.k,
            _filters(req.filters),
            on_sources=on_sources,
            on_token=on_token,
            on_generation=self.metrics.observe_generation,
            mode=req.mode,
            guided=req.guided,
        )
        self.metrics.generator_loaded.set(1)
        self.metrics.observe_answer(answer)
        return answer

    async def ask(self, req: AskRequest, receive: Receive) -> Answer:
        """The answer, generated on the generation thread while ``receive`` is watched: a client that
        disconnects (or a shutdown that cancels the request) stops the generation at its next token,
        as a closed stream does, instead of holding the decoder for an answer nobody will read."""
        await self._validate(req)
        gone = threading.Event()
        job: asyncio.Future[Any] = asyncio.wrap_future(
            self.generation.submit(self._answer_while_wanted, req, gone)
        )
        job.add_done_callback(retrieved)
        watcher: asyncio.Future[Any] = asyncio.ensure_future(disconnected(receive))
        try:
            await asyncio.wait([job, watcher], return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
            if not job.done():
                gone.set()
        if not job.done():
            raise ClientDisconnected
        return job.result()

    def _answer_while_wanted(
        self,
        req: AskRequest,
        gone: threading.Event,
        on_sources: OnSources | None = None,
        on_token: OnToken | None = None,
    ) -> Answer:
        """``_answer``, stopped at the next token once its client is ``gone`` (ClientGone) or the
        server is stopping (503); not started at all if either happened while it queued."""

        def checked(text: str) -> None:
            check_wanted(gone, self.stopping)
            if on_token:
                on_token(text)

        check_wanted(gone, self.stopping)
        return self._answer(req, on_sources, checked)

    async def ask_stream(self, req: AskRequest) -> AsyncIterator[bytes]:
        """The events of an ask (api.streaming), once it has passed every check a 4xx could come from."""
        await self._validate(req)
        gone = threading.Event()
        return answer_events(
            partial(self._answer_while_wanted, req, gone),
            gone,
            self.generation.submit,
            known_failure,
            self.settings.sse_ping_s,
        )

    def _attribute(self, req: AttributeRequest) -> Attribution:
        return self.rag.attribute(req.question, req.answer, req.context, req.chunk_ids)

    async def attribute(self, req: AttributeRequest) -> Attribution:
        await self._validate(req)
        return await self._on_generation_thread(self._attribute, req)

    def answer(self, answer_id: str) -> Answer:
        answer = self.rag.get_answer(answer_id)
        if answer is None:
            raise HTTPException(404, f"no answer with id {answer_id}")
        return answer

    def answers(self, limit: int, offset: int) -> AnswerList:
        page, total = self.rag.answers(limit, offset)
        return AnswerList(answers=page, total=total, limit=limit, offset=offset)

    def report(self, answer_id: str) -> str:
        html = self.rag.report_html(answer_id)
        if html is None:
            raise HTTPException(404, f"no answer with id {answer_id}")
        return html

    # documents -----------------------------------------------------------------------------------------
    def documents(self) -> DocumentList:
        return DocumentList(documents=self.rag.documents())

    def document(self, document_id: int) -> DocumentInfo:
        info = self.rag.document(document_id)
        if info is None:
            raise HTTPException(404, f"no document with id {document_id}")
        return info

    async def delete_document(self, document_id: int) -> None:
        await self._on_writer_thread(self._delete_document, document_id)

    def _delete_document(self, document_id: int) -> None:
        if not self.rag.delete_document(document_id):
            raise HTTPException(404, f"no document with id {document_id}")

    async def upload(self, files: list[UploadFile]) -> IngestSummaryOut:
        for f in files:
            upload_suffix(f.filename)  # refuse the request before anything is written or queued
        return await self._on_writer_thread(self._upload, files)

    def _upload(self, files: list[UploadFile]) -> IngestSummaryOut:
        """Store the files, then sync them in through ``Rag.ingest``, as `rag ingest FILE...` would.
        All under the write lock, so that no other process's clean-up sees a stored file before its
        row exists; if the ingest fails, files it left without a row are removed."""
        with self.rag.workspace.write_lock.held():
            stored = self._store(files)
            try:
                return self._ingest_uploads(stored)
            except BaseException:
                self._remove_orphan_uploads()
                raise

    def _remove_orphan_uploads(self) -> None:
        """Delete files in uploads/ that no document names: left by an upload whose ingest failed or
        whose process was killed mid-way (and half-written ``.part`` files). When the database cannot
        say which files it knows, nothing is deleted: the next start tries again."""
        folder = self.settings.uploads_dir
        if not folder.is_dir():
            return
        try:
            with self.rag.workspace.write_lock.held():
                with self.rag.workspace.database.sessions() as s:
                    known = set(documents_under(s, folder))
                orphans = [p for p in folder.iterdir() if p.is_file() and str(p) not in known]
                for path in orphans:
                    path.unlink(missing_ok=True)
        except (SQLAlchemyError, OSError, ReadOnly) as exc:
            logger.warning("could not clear leftover uploads in %s: %s", folder, exc)
            return
        if orphans:
            logger.info("removed %d leftover uploads with no document from %s", len(orphans), folder)

    def _store(self, files: list[UploadFile]) -> list[StoredUpload]:
        stored: list[StoredUpload] = []
        budget = self.settings.max_upload_bytes
        try:
            for f in files:
                item = store(f.file, f.filename, self.settings.uploads_dir, budget)
                budget -= item.size
                stored.append(item)
        except BaseException:
            for item in stored:
                if item.created:
                    item.path.unlink(missing_ok=True)
            raise
        return stored

    def _ingest_uploads(self, stored: list[StoredUpload]) -> IngestSummaryOut:
        """A duplicate (same content as a document under another name) gets no row, so its stored
        file is removed here rather than left for ``_remove_orphan_uploads``."""
        paths = list(dict.fromkeys(item.path for item in stored))
        summary = self.rag.ingest(paths)
        failed = {f.path for f in summary.failed}
        duplicates = {d.path: d.document_id for d in summary.duplicates}
        with self.rag.workspace.database.sessions() as s:
            ids = {path: doc.id for p in paths for path, doc in documents_under(s, p).items()}
        for path in paths:
            if str(path) in duplicates:
                path.unlink(missing_ok=True)
        uploaded = [
            UploadedOut(
                filename=item.filename,
                path=str(item.path),
                document_id=duplicates.get(str(item.path), ids.get(str(item.path))),
                status=_upload_status(str(item.path), failed, duplicates),
            )
            for item in stored
        ]
        return IngestSummaryOut(**vars(summary), uploaded=uploaded)
