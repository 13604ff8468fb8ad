"""POST /v1/ask (JSON, or server-sent events) and POST /v1/attribute."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from fastapi.sse import EventSourceResponse

from api.deps import V1, AskingDep
from api.schemas import AskRequest, AttributeRequest, error_responses
from rag.types import Answer, Attribution

router = APIRouter(prefix=V1, tags=["answers"])

_SSE_DOC = (
    "The Answer; with `stream: true`, server-sent events instead: `sources` (`{sources: [Source]}`), "
    "then `token` (`{text}`) per piece of the answer, then `done` carrying the full Answer, or `error` "
    "(`{status, detail}`) if answering failed after the stream began. Each event's data is JSON."
)
_SSE_EVENT = {
    "type": "object",
    "properties": {
        "event": {"type": "string", "enum": ["sources", "token", "done", "error"]},
        "data": {"type": "string", "contentMediaType": "application/json"},
    },
    "required": ["event", "data"],
}
_LINKS = {  # the stored answer, for clients and for schemathesis' stateful tests
    "answer": {"operationId": "get_answer", "parameters": {"answer_id": "$response.body#/id"}},
    "report": {"operationId": "get_report", "parameters": {"answer_id": "$response.body#/id"}},
}


@router.post(
    "/ask",
    operation_id="ask",
    response_model=Answer,
    responses={
        200: {
            "content": {"text/event-stream": {"schema": _SSE_EVENT}},
            "description": _SSE_DOC,
            "links": _LINKS,
        },
        **error_responses(503),
    },
)
async def ask(req: AskRequest, request: Request, asking: AskingDep) -> Response | Answer:
    """Answer from the documents with [n] citations, attention shares per source and flagged sentences.
    The answer is stored: GET /v1/answers/{id} returns it again."""
    if req.stream:
        # FastAPI's response class, not its generator routes: those would make the JSON answer a stream
        # too, and ping at a fixed interval; api.streaming pings every `sse_ping_s`
        return EventSourceResponse(
            await asking.stream(req), headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
    return await asking.ask(req, request.receive)


@router.post(
    "/attribute", operation_id="attribute", response_model=Attribution, responses=error_responses(503)
)
async def attribute(req: AttributeRequest, asking: AskingDep) -> Attribution:
    """Attribution of an answer written elsewhere, teacher-forced through our decoder in one pass.
    Sources: `chunk_ids`, else `context`, else what retrieval finds for the question."""
    return await asking.attribute(req)
