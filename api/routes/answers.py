"""Stored answers: GET /v1/answers/{id} and its HTML attribution report."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import HTMLResponse

from api.deps import V1, ServiceDep
from api.schemas import AnswerOut, error_responses

router = APIRouter(prefix=f"{V1}/answers", tags=["answers"])

AnswerId = Annotated[
    str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$", description="from an Answer's `id`")
]


@router.get("/{answer_id}", operation_id="get_answer", responses=error_responses(404))
def get_answer(answer_id: AnswerId, service: ServiceDep) -> AnswerOut:
    return service.answer(answer_id)


@router.get(
    "/{answer_id}/report",
    operation_id="get_report",
    response_class=HTMLResponse,
    responses=error_responses(404),
)
def get_report(answer_id: AnswerId, service: ServiceDep) -> HTMLResponse:
    """A self-contained HTML page: the answer, per-sentence support and risk, the sources."""
    return HTMLResponse(service.report(answer_id))
