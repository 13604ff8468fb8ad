"""Dependencies the routes declare: the parts of the app they use, a database session, and the bearer
scheme for OpenAPI.

What one app holds (its ``Rag``, executors, readiness and metrics) is built by ``api.main.create_app``
and kept on ``app.state``: several apps may live in one process (tests), so nothing is global. What a
request needs beyond that is in SQL or re-read from disk (retrieval calls ``IndexSet.refresh``, which
picks up indexes another process saved), so any number of worker processes can serve one workspace.

The dependencies that only hand over a part are async on purpose: a sync dependency takes a thread of
the shared pool for every request, so a pool held by slow work would stall even /healthz.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPBearer
from sqlalchemy.orm import Session

from api.asking import Asking
from api.executors import Executors
from api.health import Readiness
from api.metrics import Metrics
from api.uploads import Uploads
from rag.core import Rag
from rag.storage.database import Database
from rag.storage.writelock import WriteLock

V1 = "/v1"  # every route under it needs the API key (when keys are set)

# Declares the scheme in /openapi.json; the check itself is api.middleware.ApiKeyAuth, which runs
# before any body is read.
bearer = HTTPBearer(
    auto_error=False,
    description="an API key from RAG_API_KEYS (every /v1 call, when any key is configured)",
)


def _kept(name: str) -> Callable[[Request], Awaitable[Any]]:
    """A dependency handing over what the app keeps as ``app.state.<name>``."""

    async def kept(request: Request) -> Any:
        return getattr(request.app.state, name)

    return kept


RagDep = Annotated[Rag, Depends(_kept("rag"))]
ExecutorsDep = Annotated[Executors, Depends(_kept("executors"))]
ReadinessDep = Annotated[Readiness, Depends(_kept("readiness"))]
MetricsDep = Annotated[Metrics, Depends(_kept("metrics"))]


async def get_database(rag: RagDep) -> Database:
    return rag.workspace.database


async def get_write_lock(rag: RagDep) -> WriteLock:
    return rag.workspace.write_lock


DatabaseDep = Annotated[Database, Depends(get_database)]
WriteLockDep = Annotated[WriteLock, Depends(get_write_lock)]


def get_session(database: DatabaseDep) -> Iterator[Session]:
    """Sync on purpose (opened and closed on a thread of the pool, as the sync routes that read with it
    run): closing a session that has read hands its connection back with a round trip to the
    database, which must never wait on the event loop."""
    with database.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


async def get_asking(
    rag: RagDep, executors: ExecutorsDep, readiness: ReadinessDep, metrics: MetricsDep
) -> Asking:
    return Asking(rag, executors, readiness, metrics)


async def get_uploads(
    rag: RagDep, executors: ExecutorsDep, database: DatabaseDep, write_lock: WriteLockDep
) -> Uploads:
    return Uploads(rag, executors, database, write_lock)


AskingDep = Annotated[Asking, Depends(get_asking)]
UploadsDep = Annotated[Uploads, Depends(get_uploads)]
