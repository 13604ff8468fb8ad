"""`rag calibrate`: the workspace teaches sightline its own documents, for the configured generator.

Questions are written from the workspace's own chunks (rag.evaluation.synthetic) and each is asked
twice through the real pipeline, its source retrievable and withheld. The labelled drafts of three
quarters of the documents fit a detector and its flag and abstention levels (rag.evaluation.training);
the other quarter checks it beside the shipped detector on the same drafts. `ask` reads the result
(`Detector.for_generator`) only where it beats the shipped detector there. Drafts are saved after every
question, so an interrupted run resumes where it stopped. Folder: RAG_HOME/calibration/<generator>/.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import func, select

from rag.attribute.detector import Detector, calibrated_path, generator_slug
from rag.evaluation.detect_data import split_of
from rag.evaluation.metrics import Estimate
from rag.evaluation.own_answers import OwnAnswers
from rag.evaluation.squad import MAX_FALSE_ABSTENTION, SquadReport, ask_and_record, summarise
from rag.evaluation.synthetic import (
    QUESTION_INSTRUCTION,
    QUESTION_START,
    pick_span,
    question_prompt,
    usable_question,
)
from rag.evaluation.training import MIN_PER_CLASS, calibrate_levels, risk_auroc, select_detector
from rag.retrieve.retriever import Filters
from rag.storage.orm import Chunk
from rag.types import BadInput

CHECK_SHARE = 0.25  # documents whose drafts only check the fit
Progress = Callable[[int, int, str], None]


@dataclass
class Row:
    """One detector's figures on the held-out synthetic drafts."""

    risk_auroc: Estimate
    false_abstention: Estimate  # answerable drafts held back or declined
    abstention: Estimate  # withheld-source drafts held back or declined
    useful: Estimate  # answerable drafts answered with the span in them
    abstain_risk: float

    @classmethod
    def of(cls, r: SquadReport) -> Row:
        return cls(r.risk_auroc, r.false_abstention, r.abstention, r.useful, r.abstain_risk)


@dataclass
class Calibration:
    generator: str
    questions: int  # kept questions, each asked twice
    dropped: int  # chunks without a usable question
    documents: int
    seconds_per_question: float  # writing, checking and asking it both ways
    chosen: str  # which candidate was fitted: trained, shipped weights, or the untrained score
    in_use: bool
    why: str
    n_check: int  # labelled held-out drafts
    calibrated: Row
    shipped: Row
    length_auroc: Estimate
    lookback_auroc: Estimate


def folder_of(calibration_dir: Path, generator: str) -> Path:
    return calibration_dir / generator_slug(generator)


def collect(rag: Any, questions: int, seed: int = 0, progress: Progress | None = None) -> OwnAnswers:
    """Write and ask up to ``questions`` questions (resuming the drafts already in the folder)."""
    pipeline = rag.load_generator()
    g = pipeline.generator
    folder = folder_of(rag.settings.calibration_dir, g.name)
    drafts_dir, dropped_file = folder / "drafts", folder / "dropped.jsonl"
    own = (OwnAnswers.load(drafts_dir) if (drafts_dir / "meta.json").exists()
           else OwnAnswers([], [], [], g.name, (g.n_layers, g.n_heads)))
    asked = {r.id.split("-")[0] for r in own.results}
    lines = dropped_file.read_text().splitlines() if dropped_file.exists() else []
    dropped = {json.loads(line)["chunk_id"] for line in lines}
    with rag.workspace.database.sessions() as s:
        chunks = s.execute(select(Chunk.id, Chunk.document_id, Chunk.text).order_by(Chunk.id)).all()
    random.Random(seed).shuffle(chunks)
    kept = len(asked)
    for chunk_id, document_id, text in chunks:
        if kept >= questions:
            break
        if str(chunk_id) in asked or chunk_id in dropped:
            continue
        t0 = time.perf_counter()
        span = pick_span(text, random.Random(f"{seed}:{chunk_id}"))
        question, why = None, "no date, number or name to ask about"
        if span is not None:
            reply = g.complete(QUESTION_INSTRUCTION, question_prompt(span), QUESTION_START[span.kind],
                               max_new_tokens=32)
            question, why = usable_question(reply, span), f"no usable question in {reply[:80]!r}"
            if question is not None and chunk_id not in {x.chunk_id for x in rag.search(question)}:
                question, why = None, "the question does not retrieve its chunk"
        if question is None or span is None:
            folder.mkdir(parents=True, exist_ok=True)
            with dropped_file.open("a", encoding="utf-8") as f:
                f.write(json.dumps({"chunk_id": chunk_id, "why": why}) + "\n")
            continue
        withheld = frozenset({chunk_id} | _chunks_containing(rag, span.text))
        for answerable in (True, False):
            ask_and_record(
                rag, own, id=f"{chunk_id}-{'a' if answerable else 'u'}", title=f"document {document_id}",
                question=question, answerable=answerable, golds=[span.text], retrieved_gold=answerable,
                filters=None if answerable else Filters(exclude_chunk_ids=withheld),
            )
        own.results[-1].seconds += time.perf_counter() - t0 - sum(r.seconds for r in own.results[-2:])
        own.save(drafts_dir)  # after both drafts: a resumed run never holds half a question
        kept += 1
        if progress:
            progress(kept, questions, question)
    return own


def _chunks_containing(rag: Any, span: str) -> set[int]:
    """Every chunk whose text holds the span (any case): withheld with the source, so the unanswerable
    case has no copy of the answer to read."""
    with rag.workspace.database.sessions() as s:
        found = s.scalars(select(Chunk.id).where(func.lower(Chunk.text).contains(span.lower(),
                                                                                   autoescape=True)))
        return set(found)


def _split(own: OwnAnswers) -> tuple[OwnAnswers, OwnAnswers]:
    """Fit and check drafts, by document (by question where there are under eight documents)."""
    by_document = len({r.title for r in own.results}) >= 8
    group = [r.title if by_document else r.id.split("-")[0] for r in own.results]
    check = [split_of(g, val=CHECK_SHARE, test=0.0) == "val" for g in group]

    def part(keep: bool) -> OwnAnswers:
        rows = [i for i, c in enumerate(check) if c == keep]
        results = [replace(own.results[i], title=group[i]) for i in rows]
        return OwnAnswers(results, [own.answers[i] for i in rows], [own.sentences[i] for i in rows],
                          own.generator, own.shape)

    return part(False), part(True)


def fit(own: OwnAnswers, shipped: Detector, say: Callable[[str], None]) -> tuple[Detector, Calibration]:
    """Fit on three quarters of the documents; check beside the shipped detector on the rest.

    Three candidates are fitted on the fit drafts: a detector trained on them, the shipped weights with
    their levels set again on them, and the untrained score with its levels; the best on the fit
    drafts (out of fold where trained) is checked. It goes in use where, on the check drafts, it ranks
    bad drafts above good ones better than the shipped detector, or keeps its ranking and brings
    false abstention within MAX_FALSE_ABSTENTION where the shipped level did not."""
    train, check = _split(own)
    selection = select_detector(train, say)
    levels = replace(shipped, meta={})
    calibrate_levels(levels, train)
    shipped_train = risk_auroc(train, shipped)
    candidates = {"trained on this workspace": (selection.cv_auroc, selection.trained),
                  "shipped weights, levels fitted here": (shipped_train, levels),
                  "untrained score, levels fitted here": (selection.cv_baseline, selection.baseline)}
    chosen = max(candidates, key=lambda name: candidates[name][0])
    detector = candidates[chosen][1]
    mine, theirs = summarise(check, detector), summarise(check, shipped)
    a, b = Row.of(mine), Row.of(theirs)
    enough = min(mine.n_bad, mine.n_good) >= MIN_PER_CLASS
    ranks_better = a.risk_auroc.value > b.risk_auroc.value
    fixes_level = (chosen.startswith("shipped") and b.false_abstention.value > MAX_FALSE_ABSTENTION
                   >= a.false_abstention.value)
    in_use = enough and (ranks_better or fixes_level)
    why = (f"under {MIN_PER_CLASS} held-out drafts of a class ({mine.n_bad} bad, {mine.n_good} good): "
           "calibrate with more --questions" if not enough else
           "it beats the shipped detector on held-out drafts" if in_use else
           "it does not beat the shipped detector on held-out drafts")
    seconds = [r.seconds for r in own.results if r.id.endswith("-u")]
    report = Calibration(
        generator=own.generator, questions=len(seconds), dropped=0,
        documents=len({r.title for r in own.results}),
        seconds_per_question=sum(r.seconds for r in own.results) / max(len(seconds), 1),
        chosen=chosen, in_use=in_use, why=why, n_check=mine.n_bad + mine.n_good, calibrated=a, shipped=b,
        length_auroc=mine.length_auroc, lookback_auroc=mine.lookback_auroc,
    )
    detector.meta = {"in_use": in_use, "calibration": asdict(report), "command": "rag calibrate",
                     "shipped": shipped.method}
    return detector, report


def run_calibration(rag: Any, questions: int, seed: int = 0, progress: Progress | None = None,
              say: Callable[[str], None] = print) -> Calibration:
    """Collect (or resume) the drafts, fit, and store the detector for `ask` to pick up."""
    own = collect(rag, questions, seed, progress)
    pipeline = rag.load_generator()
    shipped = Detector.for_generator(pipeline.generator.name)
    try:
        detector, report = fit(own, shipped, say)
    except ValueError as e:  # one class of drafts only, or none at all: nothing to fit yet
        kept = len({r.id.split("-")[0] for r in own.results})
        raise BadInput(f"cannot fit on {kept} questions ({e}): run again with more --questions; "
                       "the drafts so far are kept") from e
    folder = folder_of(rag.settings.calibration_dir, own.generator)
    dropped_file = folder / "dropped.jsonl"
    report.dropped = sum(1 for _ in dropped_file.open()) if dropped_file.exists() else 0
    detector.meta["calibration"] = asdict(report)
    detector.save(calibrated_path(rag.settings.calibration_dir, own.generator))
    rag.reload_detector()
    return report


def stored(calibration_dir: Path, generator: str) -> Calibration | None:
    """The last calibration of this generator in the workspace, if any."""
    path = calibrated_path(calibration_dir, generator)
    if not path.exists():
        return None
    found = Detector.load(path).meta.get("calibration")
    return TypeAdapter(Calibration).validate_python(found) if found else None


def format_calibration(c: Calibration) -> str:
    def row(name: str, r: Row) -> str:
        return (f"{name:<26} {r.risk_auroc!s:<30} {r.false_abstention.value:>6.2f} "
                f"{r.abstention.value:>9.2f} {r.useful.value:>7.2f}   {r.abstain_risk:.3f}")

    return "\n".join([
        f"generator {c.generator}: {c.questions} questions written from {c.documents} documents "
        f"({c.dropped} chunks dropped), each asked with its source and without; "
        f"{c.seconds_per_question:.1f} s per question",
        f"held-out drafts (a quarter of the documents): {c.n_check} labelled; calibrated = {c.chosen}",
        f"{'detector':<26} {'risk AUROC [95% CI]':<30} {'false':>6} {'abstains':>9} {'useful':>7}"
        "   abstain at",
        row("calibrated", c.calibrated),
        row("shipped", c.shipped),
        f"{'baseline: length alone':<26} {c.length_auroc!s}",
        f"{'baseline: 1 - lookback':<26} {c.lookback_auroc!s}",
        f"in use by ask: {'yes' if c.in_use else 'no'} ({c.why})",
    ])
