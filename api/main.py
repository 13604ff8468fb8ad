"""The app factory, its error handlers, and ``serve`` (what `rag serve` runs).

``create_app`` builds everything from one ``Settings``: uvicorn calls it once per worker process
(``--factory``), and tests call it with settings of their own.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.middleware import Middleware
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Match

from api.connections import uvicorn_options
from api.deps import V1
from api.errors import DATABASE_RETRY_AFTER_S, ClientDisconnected, database_detail, known_failure
from api.executors import Executors
from api.health import Readiness, stored_counts
from api.metrics import HttpMetrics, Metrics
from api.middleware import ApiKeyAuth, BodyLimit
from api.routes import api_router, health, web
from api.schemas import MAX_ATTRIBUTE_JSON_BYTES, MAX_JSON_BYTES, error_responses
from api.uploads import remove_orphans
from rag.config import Settings
from rag.core import Rag
from rag.index.embedder_record import EmbedderMismatch
from rag.readonly import ReadOnly
from rag.storage.engine import DATABASE_DOWN
from rag.types import BadInput

logger = logging.getLogger("sightline.api")

_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")
MULTIPART_OVERHEAD = 256 * 1024  # part headers and boundaries on top of the files' own bytes
MAX_REPORTED_ERRORS = 20  # validation errors listed in a 422
MAX_ECHO_CHARS = 200  # of each invalid input echoed back


def create_app(settings: Settings | None = None, *, load_models: bool = True) -> FastAPI:
    """The service for one workspace. ``load_models=False`` skips loading the models at start-up (they
    then load on first use): for tests and tools that never ask."""
    settings = settings or Settings()
    rag = Rag(settings)  # opens (and migrates) the database
    database, write_lock = rag.workspace.database, rag.workspace.write_lock
    metrics = Metrics(partial(stored_counts, database))
    executors = Executors(settings)
    readiness = Readiness(rag, metrics, database, load_models)
    upload_limit = settings.max_upload_bytes + MULTIPART_OVERHEAD

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        """Leftover uploads are cleared on the writer thread, so before any new upload; the models
        load on a decoder thread, so asks queue behind the load."""
        executors.writing.submit(remove_orphans, settings.uploads_dir, database, write_lock)
        if load_models:
            executors.generation.submit(readiness.warm_up)
        executors.stop_generating_on_signals()
        yield
        executors.close()
        readiness.close()

    app = FastAPI(
        title="sightline",
        summary="Answers from your documents that show their work: attention attribution and "
        "hallucination flags per answer.",
        version="0.1.0",
        lifespan=lifespan,
        redirect_slashes=False,  # Starlette's redirect echoes the Host header; ours is relative (below)
        middleware=[  # outermost first
            Middleware(HttpMetrics, metrics=metrics),
            Middleware(ApiKeyAuth, keys=settings.api_key_list, prefix=V1),
            Middleware(BodyLimit, upload_limit=upload_limit, json_limit=MAX_JSON_BYTES,
                       json_limits={f"{V1}/attribute": MAX_ATTRIBUTE_JSON_BYTES}),
        ],
    )
    app.state.rag = rag
    app.state.executors = executors
    app.state.readiness = readiness
    app.state.metrics = metrics
    _install_error_handlers(app)
    app.include_router(api_router, responses=error_responses(400, 401, 413, 422, 503))
    app.include_router(health.router)
    app.include_router(web.router)
    app.mount("/static", web.static_files(), name="static")
    return app


class _AsciiJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped: a validation error echoes the input, which may hold a lone
    surrogate that UTF-8 cannot encode."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def _bounded_errors(errors: Sequence[Any]) -> list[Any]:
    """At most ``MAX_REPORTED_ERRORS`` validation errors, each echoing at most ``MAX_ECHO_CHARS`` of
    the input, then one line counting the rest: a body of 300k unknown keys made a 34 MB reply."""
    shown = [{**e, "input": _clipped(e.get("input"))} for e in errors[:MAX_REPORTED_ERRORS]]
    if len(errors) > MAX_REPORTED_ERRORS:
        rest = len(errors) - MAX_REPORTED_ERRORS
        shown.append({"type": "too_many_errors", "loc": [], "msg": f"and {rest:,} more errors"})
    encoded: list[Any] = jsonable_encoder(shown)
    return encoded


def _clipped(value: Any) -> Any:
    """Scalars as they are; long strings cut; objects and lists only described (they may be huge);
    NaN and the infinities (a JSON body's ``NaN`` or ``1e999`` parse as floats) as words, because
    strict JSON has no way to write them."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, str) and len(value) > MAX_ECHO_CHARS:
        return value[:MAX_ECHO_CHARS] + f"... ({len(value):,} characters)"
    if isinstance(value, dict):
        return f"an object with {len(value):,} keys"
    if isinstance(value, list | tuple):
        return f"an array of {len(value):,} items"
    if isinstance(value, bytes):
        return _clipped(value.decode("utf-8", "replace"))
    return value


def _install_error_handlers(app: FastAPI) -> None:
    """Bad input is the caller's to fix: 422 with what to change. Anything else is our bug: logged with
    its traceback, and a JSON 500 that does not leak internals."""

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = await run_in_threadpool(_bounded_errors, exc.errors())  # off the event loop
        return _AsciiJSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(ClientDisconnected)
    async def client_disconnected(_: Request, exc: ClientDisconnected) -> Response:
        return Response(status_code=499)  # nobody reads it; /metrics counts it as nginx does

    @app.exception_handler(404)
    async def not_found(request: Request, exc: Exception) -> Response:
        """A route's own 404 as it is; an unknown path that names a route but for its trailing slash
        is redirected to that route with a relative Location (never built from the Host header)."""
        detail = getattr(exc, "detail", "Not Found")
        path = request.url.path
        if detail == "Not Found" and path.endswith("/") and len(path) > 1:
            target = {**request.scope, "path": path.rstrip("/")}
            if any(r.matches(target)[0] != Match.NONE for r in app.router.routes):
                query = request.url.query
                return RedirectResponse(target["path"] + (f"?{query}" if query else ""), status_code=307)
        return JSONResponse({"detail": detail}, status_code=404)

    @app.exception_handler(405)
    async def method_not_allowed(request: Request, exc: Exception) -> JSONResponse:
        """Allow lists every method the path has: Starlette names only the first route that matched
        the path, e.g. POST alone for /v1/documents, which also has GET."""
        allowed = [
            method
            for method in _METHODS
            if any(r.matches({**request.scope, "method": method})[0] == Match.FULL for r in app.router.routes)
        ]
        headers = {"Allow": ", ".join(allowed)}
        return JSONResponse({"detail": "Method Not Allowed"}, status_code=405, headers=headers)

    async def not_ours(_: Request, exc: Exception) -> JSONResponse:
        """Bad input (422), or a workspace that cannot do this as configured: a read-only home (it
        still answers, it cannot write) or vectors of another embedder (503, not 409: no other request
        would do; no Retry-After: it does not pass until its operator acts, as the detail says how)."""
        known = known_failure(exc)
        assert known is not None  # registered for these kinds only
        return JSONResponse({"detail": known[1]}, status_code=known[0])

    for not_our_bug in (BadInput, ReadOnly, EmbedderMismatch):
        app.add_exception_handler(not_our_bug, not_ours)

    async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        """Not our bug and not the caller's: say so in one line, and when to come back."""
        logger.warning("%s %s: %s", request.method, request.url.path, database_detail(exc))
        return JSONResponse(
            {"detail": database_detail(exc)},
            status_code=503,
            headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)},
        )

    for kind in DATABASE_DOWN:
        app.add_exception_handler(kind, database_unavailable)

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        logger.error("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": "internal server error; it has been logged"}, status_code=500)


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8000, workers: int = 1) -> None:
    """Run the service under uvicorn. Worker processes build their own app from the environment, so
    the settings are passed on through RAG_* variables; the schema is migrated here, once, before
    they start, so they never race to migrate a fresh database."""
    import uvicorn

    os.environ["RAG_HOME"] = str(settings.home_dir)
    if settings.database_url:
        os.environ["RAG_DATABASE_URL"] = settings.database_url
    Rag(settings)  # migrate
    metrics_dir = None
    if workers > 1:  # let any worker's /metrics report all of them
        metrics_dir = tempfile.mkdtemp(prefix="sightline-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        options = uvicorn_options(settings)
        uvicorn.run("api.main:create_app", factory=True, host=host, port=port, workers=workers, **options)
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
