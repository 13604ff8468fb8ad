"""The server-sent events of ``POST /v1/ask`` with ``stream: true``, and what stops a generation whose
client has gone.

A generation thread feeds an asyncio queue; the event loop writes what it holds as SSE. While nothing
comes (a stream queued behind another ask, a long prefill) a keep-alive comment goes out every
``sse_ping_s``, so a proxy's idle timeout does not cut a stream that is only waiting. When the client
goes away, the generation stops at its next token and frees the thread for the next request."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import HTTPException
from fastapi.sse import KEEPALIVE_COMMENT, format_sse_event
from pydantic import TypeAdapter
from starlette.types import Receive

from rag.types import ANSWER, Answer, Source

logger = logging.getLogger("sightline.api")

SOURCES: TypeAdapter[list[Source]] = TypeAdapter(list[Source])
BUSY_RETRY_AFTER_S = 5  # Retry-After on a 503 for a full upload queue or a server stopping

OnSources = Callable[[list[Source]], None]
OnToken = Callable[[str], None]
Generate = Callable[[OnSources, OnToken], Answer]  # an ask, reporting its sources and tokens
Failure = Callable[[Exception], tuple[int, Any] | None]  # (status, detail) of an error the client can act on


class ClientGone(Exception):
    """Raised from the token callback to stop generating for a client that closed its stream."""


def check_wanted(gone: threading.Event, stopping: threading.Event) -> None:
    """Stop a generation (at its next token, or before it starts) whose client is ``gone`` or whose
    server is ``stopping`` (a 503 the client may retry)."""
    if gone.is_set():
        raise ClientGone
    if stopping.is_set():
        retry = {"Retry-After": str(BUSY_RETRY_AFTER_S)}
        raise HTTPException(503, "the server is shutting down; retry shortly", headers=retry)


async def disconnected(receive: Receive) -> None:
    """Return when the client disconnects (the request body has already been read)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def retrieved(job: asyncio.Future[Any]) -> None:
    """Mark a generation's outcome as seen: one stopped for a departed client ends in ClientGone,
    which nobody awaits."""
    if not job.cancelled():
        job.exception()


async def answer_events(
    generate: Generate,
    gone: threading.Event,
    submit: Callable[[Callable[[], None]], object],
    failure: Failure,
    ping_s: float,
) -> AsyncIterator[bytes]:
    """``sources``, ``token``…, then ``done`` with the Answer, or ``error`` with ``{status, detail}``
    (``failure`` names the status of an error the client can act on; any other is a logged 500).
    ``generate`` runs through ``submit`` on a generation thread; ``gone`` is set when the client
    leaves, and ``generate`` is expected to stop at its next token then."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

    def emit(event: str, data: str) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: the server is shutting down
            loop.call_soon_threadsafe(events.put_nowait, (event, data))

    def on_sources(sources: list[Source]) -> None:
        emit("sources", json.dumps({"sources": SOURCES.dump_python(sources, mode="json")}))

    def on_token(text: str) -> None:
        emit("token", json.dumps({"text": text}))

    def work() -> None:
        try:
            answer = generate(on_sources, on_token)
        except ClientGone:
            return
        except Exception as exc:
            known = failure(exc)
            if known is None:
                logger.exception("streamed answer failed")
                known = (500, "internal error while answering; it has been logged")
            emit("error", json.dumps({"status": known[0], "detail": known[1]}))
        else:
            emit("done", ANSWER.dump_json(answer).decode())

    submit(work)
    waiting: asyncio.Future[tuple[str, str]] | None = None
    try:
        while True:
            # one get kept across pings: a get cancelled by a timeout could lose the event it took
            waiting = waiting or asyncio.ensure_future(events.get())
            done, _ = await asyncio.wait({waiting}, timeout=ping_s)
            if not done:
                yield KEEPALIVE_COMMENT
                continue
            event, data = waiting.result()
            waiting = None
            yield format_sse_event(event=event, data_str=data)
            if event in ("done", "error"):
                return
    finally:
        gone.set()
        if waiting is not None:
            waiting.cancel()

