"""Whether the service is ready (GET /healthz): the models loaded, and the database answering.

The models load in the background at start (on a decoder thread, api.executors): the port answers at
once, /healthz says when they are ready, and asks queue behind the load. The database is probed on a
thread of its own, never the shared pool or a decoder's, so /healthz answers at once however busy
they are; at most once a second, and a probe that hangs counts as a failure.
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError

from api.errors import database_detail
from api.metrics import Metrics
from api.schemas import Health
from rag.core import Rag
from rag.index.embedder_record import EmbedderMismatch
from rag.storage.database import Database
from rag.storage.orm import Document
from rag.storage.queries import counts

logger = logging.getLogger("sightline.api")

_PROBE_EVERY_S = 1.0  # /healthz asks the database at most this often...
_PROBE_DEADLINE_S = 2.0  # ...and reports it degraded when it does not answer within this


class DatabaseProbe:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.probing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sightline-db-probe")
        self._probe: asyncio.Future[str | None] | None = None
        self._probed_at = -_PROBE_EVERY_S
        self.problem: str | None = None

    async def check(self) -> str | None:
        """Why the database cannot be used right now, or None. One probe at a time, at most once per
        second; one that does not answer within the deadline counts as a failure."""
        loop = asyncio.get_running_loop()
        if self._probe is None and loop.time() - self._probed_at >= _PROBE_EVERY_S:
            self._probe = asyncio.wrap_future(self.probing.submit(self._ping))
            self._probed_at = loop.time()
        if self._probe is not None:
            try:
                self.problem = await asyncio.wait_for(asyncio.shield(self._probe), _PROBE_DEADLINE_S)
            except TimeoutError:
                self.problem = f"the database did not answer within {_PROBE_DEADLINE_S:g} s"
                return self.problem  # the probe goes on; the next call waits for it again
            self._probe = None
        return self.problem

    def _ping(self) -> str | None:
        """A read of a real table (SQLite answers ``SELECT 1`` without opening its file)."""
        try:
            with self.engine.connect() as conn:
                conn.execute(select(Document.id).limit(1))
        except SQLAlchemyError as exc:
            return database_detail(exc)
        return None

    def close(self) -> None:
        self.probing.shutdown(wait=False, cancel_futures=True)


class Readiness:
    def __init__(self, rag: Rag, metrics: Metrics, database: Database, load_models: bool) -> None:
        self.rag = rag
        self.metrics = metrics
        self.database = DatabaseProbe(database.engine)
        self.warming = load_models  # the models are loading (``warm_up`` is queued or running)
        self.load_error: str | None = None

    def warm_up(self) -> None:
        """Load the models (on a decoder thread): the embedder, the index and the generator."""
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
        problem = await self.database.check()
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

    def close(self) -> None:
        self.database.close()


def stored_counts(database: Database) -> tuple[int, int]:
    """(documents, chunks) from SQL, for /metrics."""
    with database.sessions() as s:
        return counts(s)
