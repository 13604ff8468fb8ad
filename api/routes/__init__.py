"""One module per resource; ``api_router`` is everything under /v1 (API key required when set).

Each module's router carries its full prefix, so a route's ``path`` is its whole URL template (the
label /metrics uses), however the installed FastAPI nests included routers."""

from __future__ import annotations

from fastapi import APIRouter, Security

from api.deps import bearer
from api.routes import answers, ask, documents, search

api_router = APIRouter(dependencies=[Security(bearer)])
for module in (ask, answers, search, documents):
    api_router.include_router(module.router)
