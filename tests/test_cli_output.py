"""What `rag ask` prints for an answer (the terminal's view of the report)."""

from __future__ import annotations

from dataclasses import replace

from rag.cli.main import answer_text
from rag.types import Hallucination
from tests.factories import make_answer


def test_the_risk_line_names_the_flag_level() -> None:
    """A trained risk reads high under its base rate: 0.75 under a level of 0.86 is 'ok', and says so."""
    answer = replace(make_answer(), hallucination=Hallucination(0.75, False, "lookback-lens", 0.86))
    text = answer_text(answer)
    assert "hallucination risk 0.75 (ok; flag level 0.86; lookback-lens)" in text
    assert "! likely unsupported (risk 0.86): Unused days are paid out every March [3]." in text
    assert "held back" not in text
    flagged = replace(answer, hallucination=Hallucination(0.91, True, "lookback-lens", 0.86))
    assert "hallucination risk 0.91 (FLAGGED; flag level 0.86; lookback-lens)" in answer_text(flagged)


def test_a_held_back_draft_says_why() -> None:
    """Held back by risk (the abstention level may sit below the flag level) or for only naming a source."""
    quotes = replace(make_answer(), answer_kind="quotes", abstained=True, draft="Leave is 40 days [1].",
                     held_back="risk",
                     hallucination=Hallucination(0.85, False, "lookback-lens", 0.86))
    text = answer_text(quotes)
    assert "(held back draft, its risk 0.85 was too high to stand behind: Leave is 40 days [1].)" in text
    assert "hallucination risk 0.85 (held back; flag level 0.86; lookback-lens)" in text
    naming = answer_text(replace(quotes, draft="[1] leave-policy.md", held_back="names_a_source"))
    assert "(held back draft, it only names a source: [1] leave-policy.md)" in naming
    declined = answer_text(replace(quotes, answer="I don't know.", answer_kind="refusal", draft=None,
                                     held_back=None))
    assert "held back" not in declined and "(ok; flag level 0.86;" in declined
