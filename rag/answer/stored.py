"""Stored answers read back (`rag report`, `GET /v1/answers/{id}`, the web page's history), with
nothing heavier than the database imported: no model, no torch, so a missing id is said at once."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from rag.answer.verdict import stored_verdict
from rag.storage.orm import AnswerRecord
from rag.storage.queries import mark_stale
from rag.types import Answer


def load_answer(sessions: sessionmaker[Session], answer_id: str) -> Answer | None:
    """A stored answer; readable without loading any model. Its sources say whether their chunks
    have changed or gone since (``Source.stale``)."""
    with sessions() as s:
        record = s.get(AnswerRecord, answer_id)
        if record is None:
            return None
        answer = Answer.from_report(record.report)
        mark_stale(s, answer.sources)  # what its chunk ids name now, so nothing shows other text
    if "held_back" not in record.report:  # stored before verdicts were kept
        answer.held_back, answer.held_back_reason = stored_verdict(answer)
    return answer
