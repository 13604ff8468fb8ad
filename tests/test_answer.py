"""`Rag.ask` / `Rag.attribute` end to end on the sample corpus with the real packaged models."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.config import Settings
from rag.core import Rag
from rag.types import BadInput
from tests.conftest import MODELS_CACHE

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rag(tmp_path_factory: pytest.TempPathFactory) -> Rag:
    rag = Rag(Settings(home=tmp_path_factory.mktemp("home"), models_cache=MODELS_CACHE))
    rag.ingest([REPO / "data"])
    rag.load_generator()
    return rag


def test_answer_cites_sources_and_reports_where_it_looked(rag: Rag) -> None:
    streamed: list[str] = []
    seen_sources: list[int] = []
    answer = rag.ask(
        "Who rowed out to rescue the survivors of the Forfarshire?",
        on_sources=lambda s: seen_sources.extend(x.chunk_id for x in s),
        on_token=streamed.append,
    )
    assert answer.answer.strip() and not answer.abstained
    assert "".join(streamed).strip() == answer.answer.strip()
    assert seen_sources == [s.chunk_id for s in answer.sources]
    shares = [s.attention_mass for s in answer.sources]
    assert all(x is not None and 0 <= x <= 1 for x in shares)
    assert sum(x or 0 for x in shares) == pytest.approx(1.0, abs=1e-4)
    top = max(answer.sources, key=lambda s: s.attention_mass or 0)
    assert top.path.endswith("keepers-lives.pdf"), [(s.path, s.attention_mass) for s in answer.sources]
    for sent in answer.sentences:
        assert answer.answer[sent.start : sent.end] == sent.text
        assert 0 <= sent.risk <= 1
    t = answer.timings
    assert t.total_ms >= t.retrieve_ms + t.prefill_ms + t.decode_ms > 0


def test_answers_are_stored_and_read_back(rag: Rag) -> None:
    answer = rag.ask("How many metres are there in a nautical mile?")
    stored = rag.get_answer(answer.id)
    assert stored is not None and stored.to_dict() == answer.to_dict()
    html = rag.report_html(answer.id)
    assert html is not None and answer.question in html
    assert rag.get_answer("no-such-answer") is None


def test_abstains_when_nothing_relevant_is_retrieved(rag: Rag) -> None:
    answer = rag.ask("What is the airspeed velocity of an unladen swallow carrying a coconut?")
    assert answer.abstained
    assert "can't answer" in answer.answer
    assert answer.timings.decode_ms == 0


def test_bad_questions_are_refused(rag: Rag) -> None:
    with pytest.raises(BadInput, match="empty"):
        rag.ask("   ")
    with pytest.raises(BadInput, match="limit"):
        rag.ask("why? " * 1000)
    with pytest.raises(BadInput, match="tokens long"):  # under the character limit, over the token one
        rag.ask("灯塔守" * 1200)
    with pytest.raises(BadInput, match=r"answer is .* tokens long"):
        rag.attribute("Who kept the light?", "灯塔守" * 1200, "Grace Darling kept it.")


def test_attribute_rates_a_contradicting_answer_riskier(rag: Rag) -> None:
    context = (
        "Grace Darling was the daughter of the keeper of the Longstone lighthouse. In 1838 she and her "
        "father rowed out in a small boat to rescue nine survivors of the wrecked steamer Forfarshire."
    )
    question = "Who rowed out to rescue the survivors of the Forfarshire?"
    faithful = rag.attribute(question, "Grace Darling and her father rowed out to rescue them.", context)
    invented = rag.attribute(
        question, "Captain Horatio Blackwood of the Royal Navy sent three lifeboats from Portsmouth.", context
    )
    assert invented.hallucination.risk > faithful.hallucination.risk
    with pytest.raises(BadInput, match="unknown chunk"):
        rag.attribute(question, "Grace Darling.", chunk_ids=[10**9])


