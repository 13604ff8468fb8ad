"""Answers: POST /v1/ask (JSON or a stream of events, api.streaming) and POST /v1/attribute, each run on
a decoder thread (api.executors) once it has passed every check a 4xx could come from, so that no
stream sends its 200 before an error it could have answered with, and nothing queues for the decoder
that could not be answered. A generation whose client leaves, or whose server is stopping, ends at its
next token."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

from fastapi import HTTPException
from fastapi.concurrency import run_in_threadpool
from starlette.types import Receive

from api.errors import ClientDisconnected, known_failure
from api.executors import Executors
from api.health import Readiness
from api.metrics import Metrics
from api.schemas import AskRequest, AttributeRequest, FiltersIn
from api.streaming import OnSources, OnToken, answer_events, check_wanted, disconnected, retrieved
from rag.core import Rag
from rag.retrieve.retriever import Filters
from rag.types import Answer, Attribution


def filters(given: FiltersIn | None) -> Filters | None:
    return given.to_filters() if given else None


class Asking:
    def __init__(self, rag: Rag, executors: Executors, readiness: Readiness, metrics: Metrics) -> None:
        self.rag = rag
        self.executors = executors
        self.readiness = readiness
        self.metrics = metrics

    async def ask(self, req: AskRequest, receive: Receive) -> Answer:
        """The answer, generated on a decoder thread while ``receive`` is watched: a client that
        disconnects (or a shutdown that cancels the request) stops the generation at its next token,
        as a closed stream does, instead of holding the decoder for an answer nobody will read."""
        await run_in_threadpool(self._check_generator, req.question)
        gone = threading.Event()
        job: asyncio.Future[Any] = asyncio.wrap_future(
            self.executors.generation.submit(self._answer_while_wanted, req, gone)
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

    async def stream(self, req: AskRequest) -> AsyncIterator[bytes]:
        """The events of an ask (api.streaming), once it has passed every check a 4xx could come from."""
        await run_in_threadpool(self._check_generator, req.question)
        gone = threading.Event()
        return answer_events(
            partial(self._answer_while_wanted, req, gone),
            gone,
            self.executors.generation.submit,
            known_failure,
            self.rag.settings.sse_ping_s,
        )

    async def attribute(self, req: AttributeRequest) -> Attribution:
        await run_in_threadpool(self._check_generator, req.question, req.answer, req.context)
        return await self.executors.on_generation_thread(
            self.rag.attribute, req.question, req.answer, req.context, req.chunk_ids
        )

    def _check_generator(self, question: str, answer: str | None = None, context: str | None = None) -> None:
        """503 when the generator could not load; 422 for text that would not fit the decoder's budget
        (the schemas bound characters; only the generator's tokenizer can count tokens)."""
        if self.readiness.load_error:
            raise HTTPException(503, self.readiness.load_error)
        self.rag.load_generator().generator.check_lengths(question, answer, context)

    def _answer_while_wanted(
        self,
        req: AskRequest,
        gone: threading.Event,
        on_sources: OnSources | None = None,
        on_token: OnToken | None = None,
    ) -> Answer:
        """The answer, stopped at the next token once its client is ``gone`` (ClientGone) or the
        server is stopping (503); not started at all if either happened while it queued."""

        def checked(text: str) -> None:
            check_wanted(gone, self.executors.stopping)
            if on_token:
                on_token(text)

        check_wanted(gone, self.executors.stopping)
        answer = self.rag.ask(
            req.question,
            req.k,
            filters(req.filters),
            on_sources=on_sources,
            on_token=checked,
            on_generation=self.metrics.observe_generation,
            mode=req.mode,
            guided=req.guided,
        )
        self.metrics.generator_loaded.set(1)
        self.metrics.observe_answer(answer)
        return answer
