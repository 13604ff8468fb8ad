"""The rules `rag calibrate` writes and labels its questions by (rag.evaluation.synthetic), on hand-made
chunks, replies and drafts: no model."""

from __future__ import annotations

import random

import pytest

from rag.evaluation.synthetic import Span, answer_spans, draft_label, pick_span, usable_question

CHUNK = (
    "Grace Darling was born on 24 November 1815 at Bamburgh. In 1838 she and her father rowed out to "
    "the wreck of the Forfarshire and saved 9 survivors from the rocks. "
    "Short line. "
    "The Longstone lighthouse stands 26 metres tall on the Farne Islands."
)


def test_spans_are_dates_years_numbers_and_names_that_occur_once() -> None:
    found = {(s.kind, s.text) for s in answer_spans(CHUNK)}
    assert ("date", "24 November 1815") in found
    assert ("year", "1838") in found
    assert ("number", "9") not in found  # a single digit is too easily guessed to ask for
    assert ("number", "26") in found
    assert ("name", "Grace Darling") in found and ("name", "Farne Islands") in found
    assert ("year", "1815") not in found  # inside the date already taken
    assert all(s.text != "Short" for s in answer_spans(CHUNK))  # sentences under six words are skipped
    repeated = "Ida Lewis kept the light. Ida Lewis saved many people from the cold water of the bay."
    assert "Ida Lewis" not in {s.text for s in answer_spans(repeated)}  # twice: ambiguous


def test_each_span_knows_its_offset_and_sentence() -> None:
    for s in answer_spans(CHUNK):
        assert CHUNK[s.start : s.start + len(s.text)] == s.text
        assert s.text in s.sentence and s.sentence in CHUNK


def test_pick_span_is_reproducible_and_none_without_candidates() -> None:
    assert pick_span(CHUNK, random.Random(3)) == pick_span(CHUNK, random.Random(3))
    assert pick_span("no numbers or names here, only plain words in lower case.", random.Random(0)) is None


YEAR = Span("1838", "year", 0, "In 1838 she rowed out.")


@pytest.mark.parametrize(("reply", "question"), [
    ("In which year did Grace Darling row out to the Forfarshire?",
     "In which year did Grace Darling row out to the Forfarshire?"),
    ("Question: When did the rescue of the Forfarshire survivors happen?\nAnswer: 1838",
     "When did the rescue of the Forfarshire survivors happen?"),
    ('1. "What year was the Forfarshire wrecked?"', "What year was the Forfarshire wrecked?"),
    ("Did the rescue happen in 1838?", None),  # gives the answer away
    ("The Forfarshire was wrecked in a storm.", None),  # no question
    ("When?", None),  # too short to route anywhere
    ("", None),
])
def test_a_reply_is_kept_only_as_a_question_that_hides_its_answer(reply: str, question: str | None) -> None:
    assert usable_question(reply, YEAR) == question


@pytest.mark.parametrize(("answerable", "draft", "declined", "label"), [
    (True, "They rowed out in 1838 [1].", False, 0),  # the span: grounded
    (True, "It happened in 1842 [1].", False, 1),  # nothing in common with the span
    (True, "I don't know.", True, None),  # a decline on an answerable question makes no claim
    (False, "They rowed out in 1838 [1].", False, 1),  # its source withheld, it answered anyway
    (False, "I don't know.", True, None),  # withheld and declined: the right call, no claim
])
def test_drafts_are_labelled_by_the_squad_rules(answerable: bool, draft: str, declined: bool,
                                                 label: int | None) -> None:
    assert draft_label(answerable, draft, YEAR, declined) == label
