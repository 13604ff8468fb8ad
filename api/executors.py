"""The threads a request's work runs on, and how they stop.

Uploads and deletions run one at a time on a writer thread of their own: they take the workspace
write lock, which a `rag ingest` in another process may hold for minutes, and only that thread ever
waits for it (at most ``max_queued_writes`` requests queue for it; past that they get 503 with
Retry-After at once). Waiting in the shared pool instead let one slow upload and ~40 small ones hold
every worker thread and freeze every route, /healthz included.

The decoder (ask, attribute, the start-up model load) runs on threads of its own, as many as may
decode at once (``batch_max``): requests queue for them instead of splitting the cores between more
generations, and the event loop, /healthz, /metrics and search never wait behind a long answer.
Within a decoder thread nothing can touch another request's KV cache: the Generator copies its shared
prefix cache into a fresh cache per request and never writes the shared one.

Searches run on a pool of one thread per core: twenty concurrent searches queue cheaply on the event
loop rather than as twenty threads fighting the event loop for the GIL and the embedder for the cores.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from types import FrameType
from typing import Any, TypeVar

from fastapi import HTTPException

from api.streaming import BUSY_RETRY_AFTER_S
from rag.config import Settings

T = TypeVar("T")


class Executors:
    def __init__(self, settings: Settings) -> None:
        # with batching, the threads of the asks decoding at once wait on the shared batch
        self.generation = ThreadPoolExecutor(max_workers=settings.batch_max,
                                             thread_name_prefix="sightline-generate")
        self.retrieval = ThreadPoolExecutor(
            max_workers=os.cpu_count() or 2, thread_name_prefix="sightline-search"
        )
        self.writing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sightline-write")
        self.max_queued_writes = settings.max_queued_writes
        self._writes_queued = 0  # submitted to the writer thread and not finished (guarded below)
        self._writes_lock = threading.Lock()
        self.stopping = threading.Event()  # set on SIGTERM/SIGINT: generations end at their next token

    def stop_generating_on_signals(self) -> None:
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
        self.writing.shutdown(wait=False, cancel_futures=True)

    async def on_generation_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.generation, partial(fn, *args))

    async def on_retrieval_thread(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.retrieval, partial(fn, *args, **kwargs))

    async def on_writer_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a write on the writer thread; 503 + Retry-After when ``max_queued_writes`` are already
        queued (the count drops when a job finishes, whether or not its client is still there)."""
        limit = self.max_queued_writes
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
