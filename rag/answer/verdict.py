"""Whether an answer stands, decided once: the Answer carries the verdict (``held_back`` and its reason),
the store keeps it, and the CLI, the report and the web page only read it (docs/design.md, "Answer")."""

from __future__ import annotations

from dataclasses import dataclass

from rag.text import names_only_a_source
from rag.types import Answer, AnswerKind, HeldBack


@dataclass(frozen=True)
class Verdict:
    held_back: HeldBack | None  # None: the draft stands (or the model declined by itself)
    reason: str | None  # one clause a person reads after "held back because ..."
    declined: bool  # the model itself said its sources do not hold the answer

    def kind(self, has_quotes: bool = False) -> AnswerKind:
        """What the answer text is: the draft, a held-back draft's evidence quoted verbatim (where it
        has any), or a refusal. The quotes are looked for only once a draft is held back."""
        if self.held_back in ("names_a_source", "risk") and has_quotes:
            return "quotes"
        return "refusal" if self.held_back is not None or self.declined else "generated"


def decide(
    *,
    relevance: float,
    min_relevance: float,
    draft: str | None,
    names_a_source: bool = False,
    risk: float = 0.0,
    abstain_risk: float = 1.0,
    declined: bool = False,
) -> Verdict:
    """The four outcomes, in the order they are checked: nothing relevant was retrieved (no draft is
    written); the draft only names a source; its risk reaches the abstention level (unless the model
    declined, which is an honest answer whatever its risk); else the draft stands."""
    if draft is None:
        reason = f"the best source's similarity {relevance:.2f} is below {min_relevance:.2f}"
        return Verdict("no_sources", reason, False)
    if names_a_source:
        return Verdict("names_a_source", "the draft gave no answer beyond naming a source", False)
    if risk >= abstain_risk and not declined:
        reason = f"the draft's hallucination risk {risk:.2f} reached the abstention level {abstain_risk:.2f}"
        return Verdict("risk", reason, False)
    return Verdict(None, None, declined)


def stored_verdict(answer: Answer) -> tuple[HeldBack | None, str | None]:
    """The verdict of an answer stored before verdicts were kept, read off what it kept: a refusal
    without a draft had no relevant source; a kept draft was held back for naming a source or for its
    risk. Only `load_answer` (rag.answer.stored) calls this, for reports without the field."""
    if not answer.abstained:
        return None, None
    if answer.draft is None:
        if answer.hallucination.method.startswith("abstained:"):
            return "no_sources", answer.hallucination.method.removeprefix("abstained:").strip()
        return None, None  # the model's own decline
    if names_only_a_source(answer.draft, answer.sources, answer.question):
        return "names_a_source", "the draft gave no answer beyond naming a source"
    return "risk", f"the draft's hallucination risk {answer.hallucination.risk:.2f} was too high"
