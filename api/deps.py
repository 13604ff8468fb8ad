"""Dependencies the routes declare: the process's Service, and the bearer scheme for OpenAPI."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPBearer

from api.service import Service

V1 = "/v1"  # every route under it needs the API key (when keys are set)

# Declares the scheme in /openapi.json; the check itself is api.middleware.ApiKeyAuth, which runs
# before any body is read.
bearer = HTTPBearer(
    auto_error=False,
    description="an API key from RAG_API_KEYS (every /v1 call, when any key is configured)",
)


async def get_service(request: Request) -> Service:
    """Async on purpose: a sync dependency takes a thread of the shared pool for every request, so
    a pool held by slow work would stall even /healthz."""
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(get_service)]
