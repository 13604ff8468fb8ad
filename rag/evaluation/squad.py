"""`rag eval squad FILE`: answer quality and risk on the generator's own answers, through the real
pipeline.

The file is SQuAD's (the official JSON or its flat JSONL) or any JSONL of ``{question, context |
contexts, answers}`` (rag.evaluation.questions.question_row). A sample of questions is drawn
(optionally from one split: articles are split by a hash of their title, so `--split val` holds
articles the detector never saw); their paragraphs are written one per .txt file into a temporary
folder and ingested with `Rag.ingest` into a temporary workspace (the configured models are
reused), so retrieval is real. Every question is asked with `Rag.ask`; risk
abstention is applied afterwards from each draft's recorded risk, which is exactly what the pipeline
does (greedy decoding is deterministic and abstention comes after it), and lets the same drafts be
scored at any abstention level or by another detector. Per question:

- recall@k of the gold paragraph (answerable questions);
- token-F1 (official SQuAD normalisation, max over the gold answers); `contains`: the normalised gold
  answer appears in the answer (the model writes sentences, which token-F1 punishes);
- useful = answerable, not abstained, gold contained; abstention on unanswerable questions; false
  abstention on answerable ones (abstained = nothing relevant retrieved, the model declined, or the
  draft's risk reached the abstention level);
- the own-answer label (`rag.evaluation.own_answers.own_label`), and the risk AUROC bad-vs-good
  over labelled drafts next to the two baselines, answer length alone and the untrained 1 - pooled
  lookback ratio.

`--save DIR` keeps each draft's pooled features (rag.attribute.detector.pool, whole answer and per sentence;
see `rag.evaluation.own_answers`) so that `rag eval train-detector --own DIR` can train on them without
running the generator again.
"""

from __future__ import annotations

import random
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from rag.attribute.detector import Detector
from rag.evaluation.detect_data import split_of
from rag.evaluation.metrics import Estimate, abstain_level, auroc, auroc_ci, contains_answer, max_f1, share
from rag.evaluation.own_answers import OwnAnswers, QuestionResult, own_label
from rag.evaluation.questions import squad_rows
from rag.text import names_only_a_source, strip_citations

MAX_FALSE_ABSTENTION = 0.2  # at most this share of answerable questions is held back


@dataclass
class SquadReport:
    n: int
    n_answerable: int
    n_unanswerable: int
    k: int
    split: str
    abstain_risk: float
    recall_at_k: float  # answerable questions
    f1: float  # answerable, abstentions score 0
    contains: float  # answerable: the draft contains the gold, whatever abstention does
    useful: Estimate  # answerable questions answered with the gold contained
    abstention: Estimate  # unanswerable questions abstained on
    false_abstention: Estimate  # answerable questions abstained on
    flagged_precision: float  # share of flagged drafts that are bad (labelled drafts)
    evidence_precision: Estimate  # correct drafts whose top evidence span holds the gold answer
    quotes_useful: Estimate  # held-back answerable drafts whose quotes contain a gold answer
    risk_auroc: Estimate  # bad vs good drafts (own_label), the risk the product reports
    # the same over answerable questions alone: wrong vs right answers, without the unanswerable
    # questions answered anyway (most bad drafts of a small generator), which are another task
    risk_auroc_answerable: Estimate
    # the abstention level that would hold back at most MAX_FALSE_ABSTENTION of this file's answerable
    # questions: the calibrated level comes from SQuAD, and a user's own questions may draw other risks
    abstain_risk_for_file: float
    length_auroc: Estimate  # baseline: answer length in tokens alone
    lookback_auroc: Estimate  # baseline: untrained 1 - pooled lookback ratio
    n_bad: int
    n_good: int
    paragraphs: int
    generator: str
    detector: str
    seconds: float
    seconds_per_question: float
    questions: list[QuestionResult] = field(default_factory=list)

    def to_dict(self, with_questions: bool = True) -> dict[str, Any]:
        d = asdict(self)
        if not with_questions:
            d.pop("questions")
        return d


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def _auroc(scores: Sequence[float], labels: Sequence[int]) -> Estimate:
    return Estimate(auroc(scores, labels), auroc_ci(scores, labels), len(labels))


def summarise(
    own: OwnAnswers, detector: Detector, abstain_risk: float | None = None, *, k: int = 5,
    split: str = "", paragraphs: int = 0, generator: str = "", seconds: float = 0.0,
) -> SquadReport:
    """The report for these drafts scored by `detector`, abstaining at `abstain_risk` (default: the
    detector's calibrated level)."""
    level = detector.abstain_risk if abstain_risk is None else abstain_risk
    results = own.results
    risks = own.risks(detector)
    abstained = [r.no_sources or r.declined or (risk is not None and risk >= level)
                 for r, risk in zip(results, risks, strict=True)]
    ans = [i for i, r in enumerate(results) if r.answerable]
    una = [i for i, r in enumerate(results) if not r.answerable]
    labelled = [i for i, r in enumerate(results) if r.label is not None and own.answers[i] is not None]
    y = [int(results[i].label or 0) for i in labelled]
    risk_l = [float(risks[i] or 0.0) for i in labelled]
    length = [float(own.answers[i].n_tokens) for i in labelled]  # type: ignore[union-attr]
    lookback = [1.0 - float(own.answers[i].lookback.mean()) for i in labelled]  # type: ignore[union-attr]
    flagged = [yy for yy, rr in zip(y, risk_l, strict=True) if rr >= detector.threshold]
    on_answerable = [j for j, i in enumerate(labelled) if results[i].answerable]
    useful = [i for i in ans if not abstained[i] and results[i].contains]
    hits = [bool(results[i].evidence_hit) for i in ans if results[i].evidence_hit is not None]
    held = [i for i in ans if (r := risks[i]) is not None and r >= level and not results[i].declined]
    quoted = [bool(results[i].quotes_hit) for i in held if results[i].quotes_hit is not None]
    return SquadReport(
        n=len(results),
        n_answerable=len(ans),
        n_unanswerable=len(una),
        k=k,
        split=split or "all",
        abstain_risk=level,
        recall_at_k=_mean([float(results[i].retrieved_gold) for i in ans]),
        f1=_mean([0.0 if abstained[i] else results[i].f1 for i in ans]),
        contains=_mean([float(results[i].contains) for i in ans]),
        useful=Estimate(*share(len(useful), len(ans)), len(ans)),
        abstention=Estimate(*share(sum(abstained[i] for i in una), len(una)), len(una)),
        false_abstention=Estimate(*share(sum(abstained[i] for i in ans), len(ans)), len(ans)),
        flagged_precision=_mean([float(f) for f in flagged]),
        evidence_precision=Estimate(*share(sum(hits), len(hits)), len(hits)),
        quotes_useful=Estimate(*share(sum(quoted), len(quoted)), len(quoted)),
        risk_auroc=_auroc(risk_l, y),
        risk_auroc_answerable=_auroc([risk_l[j] for j in on_answerable], [y[j] for j in on_answerable]),
        abstain_risk_for_file=fitted_abstain_risk(results, risks),
        length_auroc=_auroc(length, y),
        lookback_auroc=_auroc(lookback, y),
        n_bad=sum(y),
        n_good=len(y) - sum(y),
        paragraphs=paragraphs,
        generator=generator,
        detector=detector.method,
        seconds=seconds,
        # saved drafts carry their own times: a report rebuilt from them still gives s/question
        seconds_per_question=(seconds or sum(r.seconds for r in results)) / len(results) if results else 0.0,
        questions=list(results),
    )


def fitted_abstain_risk(results: Sequence[QuestionResult], risks: Sequence[float | None]) -> float:
    """The lowest risk at which to hold drafts back so that at most MAX_FALSE_ABSTENTION of the
    answerable questions are abstained on, counting those declined or with nothing retrieved."""
    ans = [i for i, r in enumerate(results) if r.answerable]
    skipped = {i for i in ans if results[i].no_sources or results[i].declined}
    drafted = [float(r) for i in ans if i not in skipped and (r := risks[i]) is not None]
    return abstain_level(drafted, len(ans), len(skipped), MAX_FALSE_ABSTENTION)


def sample_questions(path: Path, n: int, seed: int = 0, split: str = "") -> list[dict[str, Any]]:
    """n questions drawn at random, from the articles of `split` ("train"/"val") when given."""
    rows = [r for r in squad_rows(path) if not split or article_split(r["title"]) == split]
    if not rows:
        raise ValueError(f"{path}: no questions" + (f" in split {split!r}" if split else ""))
    return random.Random(seed).sample(rows, min(n, len(rows)))


def article_split(title: str) -> str:
    """"val" for a quarter of the articles (by title hash), never trained on; "train" for the rest."""
    return split_of(title, val=0.25, test=0.0)


def paragraph_file(row: dict[str, Any]) -> str:
    safe = re.sub(r"[^\w-]+", "_", row["title"]).strip("_")[:60]
    return f"{safe}__{row['paragraph_index']:03d}.txt"


def write_paragraphs(rows: Sequence[dict[str, Any]], folder: Path) -> None:
    """One file per passage (`paragraph_file`). ValueError where two passages would share a file: a
    user's lines that give one title to several contexts need a paragraph_index each, or no title."""
    written: dict[str, str] = {}
    for row in rows:
        name = paragraph_file(row)
        if written.setdefault(name, row["context"]) != row["context"]:
            raise ValueError(f"question {row['id']}: another passage has title {row['title']!r} and "
                             f"paragraph_index {row['paragraph_index']}; give each passage its own")
        (folder / name).write_text(row["context"], encoding="utf-8")


def run_questions(
    path: Path,
    settings: Any,
    n: int = 300,
    seed: int = 0,
    k: int = 5,
    split: str = "",
    save: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[OwnAnswers, int, str, Detector]:
    """Ingest the sample's paragraphs into a temporary workspace and ask every question with risk
    abstention off, keeping each draft's features (saved to `save` every 20 questions, so a long run
    stopped early keeps its drafts). Returns (drafts, paragraphs, generator, detector)."""
    from rag.config import Settings
    from rag.core import Rag

    t0 = time.perf_counter()
    say = progress or (lambda m: print(m, file=sys.stderr, flush=True))
    rows = sample_questions(path, n, seed, split)
    with tempfile.TemporaryDirectory(prefix="sightline-squad-") as tmp:
        docs = Path(tmp) / "paragraphs"
        docs.mkdir()
        write_paragraphs(rows, docs)
        base = settings.model_dump()
        base.update(home=Path(tmp) / "home", database_url=None, models_cache=settings.models_dir,
                    abstain_risk=1.01)
        rag = Rag(Settings(**base))
        summary = rag.ingest([docs])
        say(f"ingested {summary.documents} paragraphs ({summary.chunks} chunks) in {summary.seconds:.0f} s; "
            f"loading the generator")
        pipeline = rag.load_generator()
        g = pipeline.generator
        own = OwnAnswers([], [], [], g.name, (g.n_layers, g.n_heads))
        for i, row in enumerate(rows, 1):
            golds = [g for g in row["answers"]["text"] if g.strip()]
            answerable = not row["is_impossible"] and bool(golds)
            top = rag.search(row["question"], k)
            ask_and_record(
                rag, own, id=str(row["id"]), title=row["title"], question=row["question"],
                answerable=answerable, golds=golds,
                retrieved_gold=any(Path(s.path).name == paragraph_file(row) for s in top),
                checks=partial(_evidence_checks, row=row, golds=golds),
            )
            if save is not None and (i % 20 == 0 or i == len(rows)):
                own.save(save)
            r = own.results[-1]
            outcome = ("no sources" if r.no_sources else "declined" if r.declined else
                       f"label {r.label} risk {r.risk:.2f}")
            say(f"[{i}/{len(rows)}] {'A' if answerable else 'U'} {outcome}  {r.seconds:.1f} s "
                f"(total {time.perf_counter() - t0:.0f} s)  {row['question'][:50]!r} -> {r.answer[:60]!r}")
        return own, summary.documents, pipeline.generator.name, pipeline.detector


def ask_and_record(
    rag: Any,
    own: OwnAnswers,
    *,
    id: str,
    title: str,
    question: str,
    answerable: bool,
    golds: Sequence[str],
    retrieved_gold: bool,
    filters: Any = None,
    checks: Callable[[Any, Any], dict[str, Any]] | None = None,
) -> QuestionResult:
    """Ask one question through the real pipeline and keep its draft, label and pooled features in
    ``own``. ``checks(answer, draft)`` adds the fields an answerable, generated draft can fill."""
    from rag.answer.pipeline import declined
    from rag.attribute.attribution import sentence_rows
    from rag.attribute.detector import pool
    from rag.generate.decoding import Generation

    q0 = time.perf_counter()
    drafts: list[Generation] = []
    answer = rag.ask(question, filters=filters, on_generation=drafts.append)
    # a held-back draft (one naming only a source, or an empty one) is replaced by quotes
    said = answer.draft if answer.draft is not None else answer.answer
    text = strip_citations(said)
    is_declined = bool(drafts) and (declined(said) or names_only_a_source(said, answer.sources, question))
    result = QuestionResult(
        id=id,
        title=title,
        question=question,
        answerable=answerable,
        answer=said,
        no_sources=not drafts,
        declined=is_declined,
        retrieved_gold=retrieved_gold,
        f1=max_f1(text, golds) if answerable and drafts else 0.0,
        contains=answerable and bool(drafts) and contains_answer(text, golds),
        label=own_label(answerable, said, golds, is_declined) if drafts else None,
        risk=answer.hallucination.risk if drafts else None,
        seconds=time.perf_counter() - q0,
        **(checks(answer, drafts[0]) if checks and drafts and answerable else {}),
    )
    gen = drafts[0] if drafts else None
    own.results.append(result)
    own.answers.append(pool(gen) if gen is not None else None)
    own.sentences.append([pool(gen, r) for _, r in sentence_rows(gen) if bool(r.any())] if gen else [])
    return result


def _evidence_checks(answer: Any, draft: Any, row: dict[str, Any], golds: Sequence[str]) -> dict[str, Any]:
    """evidence_hit and quotes_hit of an answerable draft (see QuestionResult)."""
    from rag.attribute.attribution import evidence_spans

    gold_file, starts = paragraph_file(row), row["answers"]["answer_start"]
    spans = [(s, s + len(t)) for s, t in zip(starts, row["answers"]["text"], strict=False) if s >= 0]
    hit = None
    naming = [s for s in answer.sentences if contains_answer(strip_citations(s.text), golds)]
    if naming and naming[0].evidence:
        top = naming[0].evidence[0]
        hit = Path(top.path).name == gold_file and any(
            top.char_start <= lo and hi <= top.char_end for lo, hi in spans
        )
    quotes = evidence_spans(draft, answer.sources, limit=2)
    return {"evidence_hit": hit, "quotes_hit": contains_answer(" ".join(q.text for q in quotes), golds)}


def evaluate(
    path: Path,
    settings: Any,
    n: int = 300,
    seed: int = 0,
    k: int = 5,
    split: str = "",
    save: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> SquadReport:
    """`rag eval squad`: ask the sample, optionally keep the drafts' features, and report."""
    t0 = time.perf_counter()
    own, paragraphs, generator, detector = run_questions(path, settings, n, seed, k, split, save, progress)
    return summarise(own, detector, settings.abstain_risk, k=k, split=split, paragraphs=paragraphs,
                     generator=generator, seconds=time.perf_counter() - t0)


def format_report(r: SquadReport) -> str:
    return "\n".join(
        [
            f"n {r.n} ({r.n_answerable} answerable, {r.n_unanswerable} unanswerable), split {r.split}"
            + (f", over {r.paragraphs} paragraphs" if r.paragraphs else "")
            + f"; generator {r.generator}; " + (f"{r.seconds:.0f} s " if r.seconds else "")
            + f"({r.seconds_per_question:.1f} s/question)",
            f"recall@{r.k} of the gold paragraph   {r.recall_at_k:.3f}   (answerable)",
            f"useful answers                 {r.useful!s}   (answerable: answered, gold contained)",
            f"abstention on unanswerable     {r.abstention!s}   (held back at risk {r.abstain_risk:.3f})",
            f"false abstention               {r.false_abstention!s}   (answerable)",
            f"  abstain_risk for this file   {r.abstain_risk_for_file:.3f}   (RAG_ABSTAIN_RISK holding back "
            f"at most {MAX_FALSE_ABSTENTION:.0%} of its answerable questions"
            + ("; above 1: never, declines alone reach that)" if r.abstain_risk_for_file > 1 else ")"),
            f"token-F1                       {r.f1:.3f}   (answerable; abstentions score 0)",
            f"own-answer risk AUROC          {r.risk_auroc!s}   ({r.n_bad} bad / {r.n_good} good drafts)",
            f"  baseline: length alone       {r.length_auroc!s}",
            f"  baseline: 1 - lookback       {r.lookback_auroc!s}   (untrained)",
            f"  answerable questions alone   {r.risk_auroc_answerable!s}   (wrong vs right answers)",
            f"flag precision                 {r.flagged_precision:.3f}   (flagged drafts that are bad)",
            f"evidence precision             {r.evidence_precision!s}   (correct: top span has gold)",
            f"quote fallback useful          {r.quotes_useful!s}   (held back: quotes have gold)",
            f"detector: {r.detector}",
        ]
    )
