"""Every branch of the answer's verdict (rag.answer.verdict), and the verdict of answers stored before
it was kept, on hand-built data."""

from __future__ import annotations

from dataclasses import replace

import pytest

from rag.answer.verdict import decide, stored_verdict
from rag.types import Answer, Hallucination, Source, Timings

LEVELS = {"relevance": 0.6, "min_relevance": 0.3, "abstain_risk": 0.84}


def test_nothing_relevant_retrieved_is_held_back_without_a_draft() -> None:
    v = decide(relevance=0.12, min_relevance=0.3, draft=None)
    assert (v.held_back, v.kind(), v.declined) == ("no_sources", "refusal", False)
    assert v.reason == "the best source's similarity 0.12 is below 0.30"


@pytest.mark.parametrize("has_quotes", [True, False])
def test_a_draft_that_only_names_a_source_is_held_back_before_its_risk(has_quotes: bool) -> None:
    v = decide(**LEVELS, draft="[1] leave.md", names_a_source=True, risk=0.99)
    assert v.held_back == "names_a_source" and v.reason == "the draft gave no answer beyond naming a source"
    assert v.kind(has_quotes) == ("quotes" if has_quotes else "refusal")


@pytest.mark.parametrize(("risk", "held"), [(0.84, "risk"), (0.95, "risk"), (0.83, None)])
def test_a_draft_at_or_over_the_abstention_level_is_held_back(risk: float, held: str | None) -> None:
    v = decide(**LEVELS, draft="Leave is 40 days [1].", risk=risk)
    assert v.held_back == held
    assert v.kind(has_quotes=True) == ("quotes" if held else "generated")
    assert (v.reason is not None) == (held is not None)
    if held:
        assert v.reason == f"the draft's hallucination risk {risk:.2f} reached the abstention level 0.84"


def test_a_models_own_decline_stands_whatever_its_risk() -> None:
    v = decide(**LEVELS, draft="I don't know.", risk=0.99, declined=True)
    assert (v.held_back, v.reason, v.kind(has_quotes=True), v.declined) == (None, None, "refusal", True)


def test_a_grounded_draft_stands() -> None:
    v = decide(**LEVELS, draft="New employees get 25 days [1].", risk=0.1)
    assert (v.held_back, v.reason, v.kind(), v.declined) == (None, None, "generated", False)


def _stored(**fields: object) -> Answer:
    source = Source(chunk_id=1, document_id=1, path="/docs/leave-policy.md", doc_type="md",
                    title="Leave policy", page=None, char_start=0, char_end=30,
                    text="Employees get 25 days of leave.", score=0.7, rank=1)
    answer = Answer(id="a", question="How many days?", answer="25 days [1].", created_at="2026-01-01",
                    model={"generator": "g", "embedder": "e", "decoding": "greedy"}, sources=[source],
                    sentences=[], hallucination=Hallucination(0.9, True, "lookback-lens", 0.86),
                    timings=Timings())
    return replace(answer, **fields)  # type: ignore[arg-type]


NO_SOURCES = Hallucination(0.0, False, "abstained: best source similarity 0.12 < 0.3", 0.86)


@pytest.mark.parametrize(("fields", "expected"), [
    ({}, None),
    ({"abstained": True}, None),  # the model's own decline
    ({"abstained": True, "hallucination": NO_SOURCES}, "no_sources"),
    ({"abstained": True, "draft": "[1] leave-policy.md"}, "names_a_source"),
    ({"abstained": True, "draft": "Leave is 40 days [1]."}, "risk"),
])
def test_answers_stored_before_verdicts_read_theirs_off_what_was_kept(
    fields: dict[str, object], expected: str | None
) -> None:
    held_back, reason = stored_verdict(_stored(**fields))
    assert held_back == expected and (reason is None) == (expected is None)
