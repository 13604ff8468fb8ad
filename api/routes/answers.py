"""Stored answers: the newest first, one by id, and its HTML attribution report."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.responses import HTMLResponse

from api.deps import V1, RagDep, SessionDep
from api.schemas import MAX_SQL_INT, AnswerList, error_responses
from rag.storage.queries import answer_summaries
from rag.types import Answer

router = APIRouter(prefix=f"{V1}/answers", tags=["answers"])

AnswerId = Annotated[
    str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$", description="from an Answer's `id`")
]

MAX_PAGE = 100


@router.get("", operation_id="list_answers")
def list_answers(
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="answers per page")] = 20,
    offset: Annotated[int, Query(ge=0, le=MAX_SQL_INT, description="answers to skip")] = 0,
) -> AnswerList:
    """Stored answers, newest first (question, risk, time); GET /v1/answers/{id} has the whole one."""
    page, total = answer_summaries(session, limit, offset)
    return AnswerList(answers=page, total=total, limit=limit, offset=offset)


@router.get("/{answer_id}", operation_id="get_answer", responses=error_responses(404))
def get_answer(answer_id: AnswerId, rag: RagDep) -> Answer:
    answer = rag.get_answer(answer_id)
    if answer is None:
        raise HTTPException(404, f"no answer with id {answer_id}")
    return answer


@router.get(
    "/{answer_id}/report",
    operation_id="get_report",
    response_class=HTMLResponse,
    responses=error_responses(404),
)
def get_report(answer_id: AnswerId, rag: RagDep) -> HTMLResponse:
    """A self-contained HTML page: the answer, per-sentence support and risk, the sources."""
    html = rag.report_html(answer_id)
    if html is None:
        raise HTTPException(404, f"no answer with id {answer_id}")
    return HTMLResponse(html)
