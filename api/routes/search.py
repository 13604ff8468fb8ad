"""POST /v1/search: retrieval only."""

from __future__ import annotations

from fastapi import APIRouter

from api.asking import filters
from api.deps import V1, ExecutorsDep, RagDep
from api.schemas import SearchRequest, SearchResponse

router = APIRouter(prefix=V1, tags=["search"])


@router.post("/search", operation_id="search")
async def search(req: SearchRequest, rag: RagDep, executors: ExecutorsDep) -> SearchResponse:
    """The chunks an answer would be built from, best first."""
    sources = await executors.on_retrieval_thread(
        rag.search, req.query, req.k, filters(req.filters), mode=req.mode
    )
    return SearchResponse(results=sources)
