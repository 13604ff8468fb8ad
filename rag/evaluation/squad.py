"""`rag eval squad FILE`: answer quality on SQuAD-2 through the real pipeline.

A sample of questions is drawn; their paragraphs are written one per .txt file into a temporary folder
and ingested with `Rag.ingest` into a temporary workspace (the configured models are reused), so
retrieval is real. Then per question:

- recall@k of the gold paragraph (answerable questions): one of the top k retrieved chunks is from it;
- token-F1 (official SQuAD normalisation, max over the gold answers) of the answer, for answerable
  questions; an abstention scores 0. `contains`: the normalised gold answer appears in the answer
  (the model writes sentences, which token-F1 punishes for their extra words);
- abstention accuracy on unanswerable questions: abstained = `Answer.abstained` or the model declined
  (`rag.answering.declined`); false abstentions on answerable ones are reported too;
- mean risk of the generated answers, answerable vs unanswerable (and the AUROC of risk between them).
"""

from __future__ import annotations

import random
import re
import string
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rag.evaluation.detect import auroc
from rag.evaluation.detect_data import squad_rows

_CITATION = re.compile(r"\[\d+(?:\s*[,;]\s*\d+)*\]")


# --------------------------------------------------------------------------------------------------
# metrics


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def token_f1(prediction: str, gold: str) -> float:
    """SQuAD token-F1 of one prediction against one gold answer."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def max_f1(prediction: str, golds: Sequence[str]) -> float:
    """Best token-F1 over the gold answers (0 when there are none)."""
    return max((token_f1(prediction, g) for g in golds), default=0.0)


def contains_answer(prediction: str, golds: Sequence[str]) -> bool:
    """Whether a normalised gold answer occurs, as whole words, in the normalised prediction."""
    pred = f" {normalize_answer(prediction)} "
    return any(normalize_answer(g) and f" {normalize_answer(g)} " in pred for g in golds)


def abstention_accuracy(abstained: Sequence[bool], answerable: Sequence[bool]) -> float:
    """Share of the unanswerable questions on which the system abstained (NaN when there are none)."""
    picked = [a for a, ok in zip(abstained, answerable, strict=True) if not ok]
    return sum(picked) / len(picked) if picked else float("nan")


def strip_citations(answer: str) -> str:
    return " ".join(_CITATION.sub(" ", answer).split())


# --------------------------------------------------------------------------------------------------
# the run


@dataclass
class QuestionResult:
    id: str
    question: str
    answerable: bool
    answer: str
    abstained: bool
    retrieved_gold: bool  # gold paragraph among the top k
    f1: float
    contains: bool
    risk: float | None  # None when nothing was generated
    seconds: float


@dataclass
class SquadReport:
    n: int
    n_answerable: int
    n_unanswerable: int
    k: int
    recall_at_k: float  # answerable questions
    f1: float  # answerable, abstentions score 0
    f1_answered: float  # answerable questions that got an answer
    contains: float  # answerable
    abstention_accuracy: float  # unanswerable
    false_abstention: float  # answerable questions abstained on
    squad2_f1: float  # all questions: answerable F1, unanswerable 1 if abstained
    mean_risk_answerable: float
    mean_risk_unanswerable: float
    risk_auroc: float  # risk separating unanswerable from answerable (generated answers only)
    paragraphs: int
    generator: str
    seconds: float
    questions: list[QuestionResult] = field(default_factory=list)

    def to_dict(self, with_questions: bool = True) -> dict[str, Any]:
        d = asdict(self)
        if not with_questions:
            d.pop("questions")
        return d


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def summarise(
    results: Sequence[QuestionResult], k: int, paragraphs: int = 0, generator: str = "", seconds: float = 0.0
) -> SquadReport:
    ans = [r for r in results if r.answerable]
    una = [r for r in results if not r.answerable]
    risk_ans = [r.risk for r in ans if r.risk is not None]
    risk_una = [r.risk for r in una if r.risk is not None]
    return SquadReport(
        n=len(results),
        n_answerable=len(ans),
        n_unanswerable=len(una),
        k=k,
        recall_at_k=_mean([float(r.retrieved_gold) for r in ans]),
        f1=_mean([r.f1 for r in ans]),
        f1_answered=_mean([r.f1 for r in ans if not r.abstained]),
        contains=_mean([float(r.contains) for r in ans]),
        abstention_accuracy=abstention_accuracy(
            [r.abstained for r in results], [r.answerable for r in results]
        ),
        false_abstention=_mean([float(r.abstained) for r in ans]),
        squad2_f1=_mean([r.f1 if r.answerable else float(r.abstained) for r in results]),
        mean_risk_answerable=_mean(risk_ans),
        mean_risk_unanswerable=_mean(risk_una),
        risk_auroc=auroc(risk_ans + risk_una, [False] * len(risk_ans) + [True] * len(risk_una)),
        paragraphs=paragraphs,
        generator=generator,
        seconds=seconds,
        questions=list(results),
    )


def sample_questions(path: Path, n: int, seed: int = 0) -> list[dict[str, Any]]:
    rows = list(squad_rows(path))
    return random.Random(seed).sample(rows, min(n, len(rows)))


def paragraph_file(row: dict[str, Any]) -> str:
    safe = re.sub(r"[^\w-]+", "_", row["title"]).strip("_")[:60]
    return f"{safe}__{row['paragraph_index']:03d}.txt"


def evaluate(
    path: Path,
    settings: Any,
    n: int = 300,
    seed: int = 0,
    k: int = 5,
    progress: Callable[[str], None] | None = None,
) -> SquadReport:
    """Ingest the sample's paragraphs into a temporary workspace and ask every question."""
    from rag.answering import declined
    from rag.config import Settings
    from rag.core import Rag

    t0 = time.perf_counter()
    say = progress or (lambda m: print(m, file=sys.stderr, flush=True))
    rows = sample_questions(path, n, seed)
    with tempfile.TemporaryDirectory(prefix="sightline-squad-") as tmp:
        docs = Path(tmp) / "paragraphs"
        docs.mkdir()
        for row in rows:
            (docs / paragraph_file(row)).write_text(row["context"], encoding="utf-8")
        base = settings.model_dump()
        base.update(home=Path(tmp) / "home", database_url=None, models_cache=settings.models_dir)
        rag = Rag(Settings(**base))
        summary = rag.ingest([docs])
        say(
            f"ingested {summary.documents} paragraphs ({summary.chunks} chunks) in {summary.seconds:.0f} s; "
            f"loading the generator"
        )
        pipeline = rag.load_generator()
        results: list[QuestionResult] = []
        for i, row in enumerate(rows, 1):
            q0 = time.perf_counter()
            golds = [g for g in row["answers"]["text"] if g.strip()]
            answerable = not row["is_impossible"] and bool(golds)
            top = rag.search(row["question"], k)
            gold_file = paragraph_file(row)
            answer = rag.ask(row["question"])
            text = strip_citations(answer.answer)
            abstained = bool(answer.abstained or declined(answer.answer))
            f1 = 0.0 if abstained else max_f1(text, golds)
            results.append(
                QuestionResult(
                    id=str(row["id"]),
                    question=row["question"],
                    answerable=answerable,
                    answer=answer.answer,
                    abstained=abstained,
                    retrieved_gold=any(Path(s.path).name == gold_file for s in top),
                    f1=f1 if answerable else 0.0,
                    contains=answerable and not abstained and contains_answer(text, golds),
                    risk=answer.hallucination.risk if answer.timings.decode_ms > 0 else None,
                    seconds=time.perf_counter() - q0,
                )
            )
            r = results[-1]
            elapsed = time.perf_counter() - t0
            outcome = "abstained" if abstained else f"f1 {f1:.2f}" if answerable else "answered"
            say(
                f"[{i}/{len(rows)}] {'A' if answerable else 'U'} {outcome}  {r.seconds:.0f} s "
                f"(total {elapsed:.0f} s)  {row['question'][:60]!r} -> {text[:60]!r}"
            )
        return summarise(results, k, summary.documents, pipeline.generator.name, time.perf_counter() - t0)


def format_report(r: SquadReport) -> str:
    return "\n".join(
        [
            f"n {r.n} ({r.n_answerable} answerable, {r.n_unanswerable} unanswerable) over "
            f"{r.paragraphs} paragraphs; generator {r.generator}; {r.seconds:.0f} s",
            f"recall@{r.k} of the gold paragraph   {r.recall_at_k:.3f}   (answerable)",
            f"token-F1                       {r.f1:.3f}   "
            f"(answerable; {r.f1_answered:.3f} where it answered)",
            f"answer contains the gold       {r.contains:.3f}",
            f"abstention accuracy            {r.abstention_accuracy:.3f}   (unanswerable)",
            f"false abstention               {r.false_abstention:.3f}   (answerable)",
            f"SQuAD-2 F1                     {r.squad2_f1:.3f}   (all; unanswerable = 1 if abstained)",
            f"mean risk                      {r.mean_risk_answerable:.3f} answerable / "
            f"{r.mean_risk_unanswerable:.3f} unanswerable (AUROC {r.risk_auroc:.3f})",
        ]
    )
