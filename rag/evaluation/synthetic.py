"""Questions a workspace writes about itself, for `rag calibrate`: no judge and no human.

A chunk's answer span (a date, a number or a name; `answer_spans`) is handed to the generator, which
writes a question that the span answers (`QUESTION_INSTRUCTION`). `usable_question` drops replies
that are no question, or that give the answer away. Each kept question is asked twice through the
real pipeline: with everything retrievable (answerable: its draft should contain the span), and with
its chunk and every chunk containing the span withheld (unanswerable: its draft should decline).
`draft_label` labels both as `rag eval squad` does (rag.evaluation.own_answers.own_label).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from rag.evaluation.own_answers import own_label
from rag.text import split_sentences, words

QUESTION_INSTRUCTION = (
    "You write quiz questions. Given a fact and an answer, write one short question about the fact "
    "whose answer is the given answer. Never put the answer in the question. Reply with the question only."
)
# the reply's first words, by the kind of answer: a small model held to them writes a question
# instead of answering one (the 0.5B coder replied with the answer itself to 46 of 48 chunks)
QUESTION_START = {"date": "When", "year": "In what year", "number": "How many", "name": "What"}
_MONTHS = "January|February|March|April|May|June|July|August|September|October|November|December"
# the kinds of answer a question can ask for without ambiguity, most specific first
_KINDS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("date", re.compile(rf"\b(?:\d{{1,2}} (?:{_MONTHS}) \d{{3,4}}|(?:{_MONTHS}) \d{{1,2}}, \d{{3,4}}|"
                        rf"(?:{_MONTHS}) \d{{3,4}})\b")),
    ("year", re.compile(r"\b(?:1[0-9]{3}|20[0-9]{2})\b")),
    ("number", re.compile(r"\b\d{1,3}(?:,\d{3})+(?:\.\d+)?\b|\b\d+(?:\.\d+)?(?: ?(?:%|per ?cent))?")),
    ("name", re.compile(r"\b[A-Z][a-z]+(?:[ -](?:(?:of|de|la|van|von|der|the) )?[A-Z][a-z]+){1,3}\b")),
)
MAX_SPAN_WORDS = 5
MIN_QUESTION_WORDS, MAX_QUESTION_WORDS = 4, 30


@dataclass(frozen=True)
class Span:
    text: str
    kind: str  # date, year, number or name
    start: int  # char offset in the chunk's text
    sentence: str  # the sentence holding it: what the question is written from


def answer_spans(text: str) -> list[Span]:
    """Every candidate answer in a chunk, one per distinct text: dates, years, numbers and names of
    two to four words that occur once in the chunk (a repeated one is ambiguous), inside a sentence of
    at least six words. A span inside a longer one of an earlier kind is skipped."""
    found: list[Span] = []
    taken: list[tuple[int, int]] = []
    for start, end in split_sentences(text):
        sentence = text[start:end]
        if len(words(sentence)) < 6:
            continue
        for kind, pattern in _KINDS:
            for m in pattern.finditer(sentence):
                lo, hi = start + m.start(), start + m.end()
                span = m.group(0).strip()
                if (not span or len(span.split()) > MAX_SPAN_WORDS or text.count(span) != 1
                        or any(a <= lo < b or a < hi <= b for a, b in taken)
                        or (kind == "number" and len(span) < 2)):
                    continue
                taken.append((lo, hi))
                found.append(Span(span, kind, lo, sentence.strip()))
    return found


def pick_span(text: str, rng: random.Random) -> Span | None:
    """One answer span of the chunk, kinds drawn evenly so that names do not crowd out numbers."""
    spans = answer_spans(text)
    if not spans:
        return None
    kind = rng.choice(sorted({s.kind for s in spans}))
    return rng.choice([s for s in spans if s.kind == kind])


def question_prompt(span: Span) -> str:
    """The user turn that asks for a question answered by `span`: its sentence, then the answer."""
    return f"Fact: {span.sentence}\nAnswer: {span.text}"


def usable_question(reply: str, span: Span) -> str | None:
    """The question in the generator's reply, or None: not a question, of an odd length, or one that
    contains its answer (in words, so '1838' is found in 'in 1838?')."""
    line = next((ln.strip() for ln in reply.splitlines() if ln.strip()), "")
    line = line[: line.index("?") + 1] if "?" in line else line
    line = re.sub(r"^(?:question\s*\d*\s*[:.)-]\s*|\d+[.)]\s*|[-*]\s*)", "", line, flags=re.IGNORECASE)
    line = line.strip().strip('"“”').strip()
    if not line.endswith("?"):
        return None
    n = len(words(line))
    if not MIN_QUESTION_WORDS <= n <= MAX_QUESTION_WORDS:
        return None
    answer_words = words(span.text)
    q = words(line)
    if any(q[i : i + len(answer_words)] == answer_words for i in range(len(q) - len(answer_words) + 1)):
        return None
    return line


def draft_label(answerable: bool, draft: str, span: Span, declined: bool) -> int | None:
    """0 grounded, 1 not, None unlabelled: the answerable draft should contain its span, the withheld
    one should decline (rag.evaluation.own_answers.own_label, with the span as the only gold)."""
    return own_label(answerable, draft, [span.text], declined)
