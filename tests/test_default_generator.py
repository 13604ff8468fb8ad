"""The shipped default generator (rag.config.DEFAULT_GENERATOR, int8 on CPU) with its shipped
detector: it loads offline from its packages, answers the README demo from data/, and the risk tells
a made-up year from the one the document states. The rest of the suite uses the small model."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.config import DEFAULT_GENERATOR, Settings
from rag.core import Rag
from tests.conftest import MODELS_CACHE, REPO
from tests.factories import MADE_UP

pytestmark = pytest.mark.slow

DOCUMENT = (
    "The Eddystone Lighthouse stands on the Eddystone Rocks, 14 kilometres south of Rame Head. "
    "The present tower, designed by James Douglass, was first lit in 1882. It replaced Smeaton's "
    "tower of 1759, whose upper part was rebuilt on Plymouth Hoe as a memorial."
)
QUESTION = "When was the present Eddystone Lighthouse first lit?"


@pytest.fixture(scope="module")
def rag(tmp_path_factory: pytest.TempPathFactory) -> Rag:
    home = tmp_path_factory.mktemp("default") / "home"
    rag = Rag(Settings(home=home, models_cache=MODELS_CACHE, generator=DEFAULT_GENERATOR, quantize="int8"))
    rag.ingest([REPO / "data"])
    return rag


def test_the_default_loads_offline_and_answers_the_readme_demo(rag: Rag) -> None:
    answer = rag.ask("Who rowed out to rescue the survivors of the Forfarshire?")
    assert "Qwen2.5-Coder-0.5B" in answer.model["generator"] and answer.model["generator"].endswith("+int8")
    assert "Grace Darling" in answer.answer, answer.answer
    assert not answer.abstained and answer.sentences
    assert Path(answer.sources[0].path).name == "keepers-lives.pdf"


def test_a_made_up_year_is_flagged_and_the_stated_one_is_not(rag: Rag) -> None:
    right = rag.attribute(QUESTION, "The present tower was first lit in 1882.", context=DOCUMENT)
    wrong = rag.attribute(QUESTION, "The present tower was first lit in 1907.", context=DOCUMENT)
    assert not right.hallucination.flagged, right.hallucination
    assert wrong.hallucination.flagged, wrong.hallucination
    assert wrong.hallucination.risk > right.hallucination.risk


def test_a_second_sentence_is_judged_on_what_it_says(rag: Rag) -> None:
    """A later sentence has the answer so far to look back on; a faithful one must not be flagged for
    that, and an invented one after the same faithful opening must be."""
    question = "Who rowed out to rescue the survivors of the Forfarshire?"
    chunk = rag.search(question, k=1)[0]
    opening = "Grace Darling and her father rowed out to the wreck."
    said = {
        kind: rag.attribute(question, f"{opening} {second}", chunk_ids=[chunk.chunk_id]).sentences[1]
        for kind, second in [
            ("faithful", "In two trips they brought nine people to safety."),
            ("invented", "The Royal Navy later gave them a steam yacht from Portsmouth."),
        ]
    }
    assert not said["faithful"].flagged and said["invented"].flagged, said
    assert said["invented"].risk > said["faithful"].risk


def test_an_ingested_file_answers_a_question_only_it_can(rag: Rag, tmp_path: Path) -> None:
    (tmp_path / "varnholm.md").write_text(MADE_UP, encoding="utf-8")
    rag.ingest([tmp_path])
    answer = rag.ask("Who was the keeper of the Varnholm light from 1911 to 1934?")
    assert Path(answer.sources[0].path).name == "varnholm.md"
    said = answer.draft if answer.abstained else answer.answer  # the generator read the file
    assert said and "Elin" in said, answer
