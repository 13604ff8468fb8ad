"""Which errors are not our bug, and what the client is told about them: the app's error handlers
(api.main) and a streamed answer's ``error`` event (api.asking) both answer from ``known_failure``."""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException

from rag.index.embedder_record import EmbedderMismatch
from rag.readonly import ReadOnly
from rag.storage.engine import DATABASE_DOWN, DatabaseUnavailable, failure_reason
from rag.types import BadInput

DATABASE_RETRY_AFTER_S = 5  # Retry-After on a 503 for an unavailable database


def database_detail(exc: BaseException) -> str:
    """One line for a database that cannot be used right now (no URL: clients need not see it)."""
    reason = exc.reason if isinstance(exc, DatabaseUnavailable) else failure_reason(exc)
    return f"the database is unavailable ({reason}); retry later"


class ClientDisconnected(Exception):
    """The client of a non-streaming ask left before its answer was ready (logged as 499)."""


def known_failure(exc: Exception) -> tuple[int, Any] | None:
    """The status and detail of an error that is not our bug, or None: the caller's input (422), or a
    workspace that cannot do this as configured (503: the database is down, the home is read-only, or
    its vectors are another embedder's; nothing in the request is wrong)."""
    if isinstance(exc, BadInput):
        return 422, str(exc)
    if isinstance(exc, HTTPException):
        return exc.status_code, exc.detail
    if isinstance(exc, DATABASE_DOWN):
        return 503, database_detail(exc)
    if isinstance(exc, ReadOnly | EmbedderMismatch):
        return 503, str(exc)
    return None
