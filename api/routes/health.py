"""GET /healthz (readiness) and GET /metrics (Prometheus); neither needs an API key."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from api.deps import MetricsDep, ReadinessDep
from api.schemas import Health

router = APIRouter(tags=["operations"])


@router.get("/healthz", operation_id="healthz", response_model=Health, responses={503: {"model": Health}})
async def healthz(readiness: ReadinessDep) -> JSONResponse:
    """200 once the models are loaded and the database answers; 503 while they load, if loading
    failed, or while the database is unavailable (`degraded`, with the reason). The database is probed
    on a thread of its own, at most once a second and with a deadline, and no model is touched, so it
    answers at once even while an answer is being generated or uploads are being ingested."""
    health = await readiness.health()
    return JSONResponse(health.model_dump(), status_code=200 if health.ready else 503)


@router.get(
    "/metrics",
    operation_id="metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
def metrics(metrics: MetricsDep) -> Response:
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
