"""What `rag ask` prints for an answer (the terminal's view of the report)."""

from __future__ import annotations

from dataclasses import replace

from rag.cli import answer_text
from rag.types import Hallucination
from tests.test_report import make_answer


def test_the_risk_line_names_the_flag_level() -> None:
    """A trained risk reads high under its base rate: 0.75 under a level of 0.86 is 'ok', and says so."""
    answer = replace(make_answer(), hallucination=Hallucination(0.75, False, "lookback-lens", 0.86))
    text = answer_text(answer)
    assert "hallucination risk 0.75 (ok: below the flag level 0.86; lookback-lens)" in text
    assert "! likely unsupported (risk 0.86): Unused days are paid out every March [3]." in text
    flagged = replace(answer, hallucination=Hallucination(0.91, True, "lookback-lens", 0.86))
    line = "hallucination risk 0.91 (FLAGGED: at or above the flag level 0.86; lookback-lens)"
    assert line in answer_text(flagged)
