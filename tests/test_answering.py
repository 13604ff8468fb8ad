"""What the answer pipeline counts as no answer at all, on hand-written drafts (no model)."""

from __future__ import annotations

import pytest

from rag.answer.pipeline import declined
from rag.text import names_only_a_source
from rag.types import Source

SOURCES = [
    Source(1, 11, 1, "/docs/Normans__006.txt", "Normans__006", "The Normans were ...", 0, 20, 0.9),
    Source(2, 12, 2, "/docs/keepers-lives.pdf", "Keepers' lives", "Grace Darling ...", 0, 16, 0.8),
]


@pytest.mark.parametrize(
    ("draft", "only_a_source"),
    [
        ("[1] Normans__006", True),
        ("Normans 006.", True),  # the model's spelling of the title
        ("keepers-lives.pdf [2]", True),
        ("Keepers' lives", True),
        ("The question is answered in Normans__006 [1].", True),  # pointing words around the name
        ("It is found in keepers-lives.pdf.", True),
        ("[1][2]", True),  # citations and nothing else
        ("", True),
        ("Normans__006 says the Normans came from Normandy [1].", False),
        ("Grace Darling [2]", False),
        ("1882", False),
        ("The Normans came from Normans__006.", False),  # words of its own beside the name
        ("It is.", False),  # pointing words alone answer a yes/no question
        ("The answer is Normans006", True),  # the name's words run together
    ],
)
def test_a_draft_that_only_names_a_source_is_no_answer(draft: str, only_a_source: bool) -> None:
    assert names_only_a_source(draft, SOURCES, "Where did the Normans come from?") is only_a_source


@pytest.mark.parametrize("question", ["Which document covers the keepers?", "What PDF file names Grace?",
                                      "In which source is the rescue told?"])
def test_naming_a_source_answers_a_question_about_sources(question: str) -> None:
    assert not names_only_a_source("keepers-lives.pdf [2]", SOURCES, question)


def test_a_decline_is_told_from_an_answer() -> None:
    assert declined("I don't know.") and declined("The sources do not contain the answer.")
    assert not declined("Grace Darling rowed out [2].")
