"""POST /v1/search: retrieval only."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import V1, ServiceDep
from api.schemas import SearchRequest, SearchResponse

router = APIRouter(prefix=V1, tags=["search"])


@router.post("/search", operation_id="search")
async def search(req: SearchRequest, service: ServiceDep) -> SearchResponse:
    """The chunks an answer would be built from, best first."""
    return await service.search(req)
