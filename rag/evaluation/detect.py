"""`rag eval detect FILE.jsonl`: the shipped detector on labelled answers written elsewhere.

Each line ``{question, context, response, hallucinated}`` is teacher-forced through the configured
generator with its context as one source, as `rag attribute --context` does (answers to the same
prompt share one prompt pass: `Generator.teacher_force_many`). On every set in the file (the
``source`` field; the whole file too) the report puts the detector next to its two baselines:

- ``detector``: the answer risk the product reports (the riskiest sentence's, rag.attribute.attribution);
- ``lookback``: untrained, 1 - the mean over layers and heads of the answer's pooled lookback ratio;
- ``length``: the answer's length in tokens alone (on HaluEval the hallucinated answers are longer;
  a detector that only learned length is worth little);
- ``overlap``: no model, the share of the answer's words found in neither context nor question.

Evidence precision goes beside them: of the faithful answers whose text occurs in their context, the
share whose top evidence span (rag.attribute.attribution.evidence_spans, as every answer reports) contains it.

These lines are teacher-forced, not the generator's own answers: the figures that decide what ships
come from `rag eval squad` and `rag eval train-detector` (rag.evaluation.training).
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rag.attribute.detector import Detector, Pooled, pool
from rag.evaluation.detect_data import DetectExample
from rag.evaluation.metrics import Estimate, Interval, auroc, auroc_ci, contains_answer, f1_at, share
from rag.text import words
from rag.types import Source

ProgressFn = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class ForcedAnswer:
    """What one teacher-forced answer leaves for scoring."""

    answer: Pooled
    sentences: list[Pooled]
    # a faithful answer found verbatim in its context: whether the top evidence span holds it
    # (None: hallucinated, or not in the context, so there is no span to find)
    evidence_hit: bool | None = None

    def risk(self, detector: Detector) -> float:
        return max((detector.risk(p) for p in self.sentences), default=0.0)


def extract(generator: Any, examples: Sequence[DetectExample],
            progress: ProgressFn | None = _stderr) -> list[ForcedAnswer]:
    """Teacher-force every example, grouped by prompt."""
    from rag.attribute.attribution import evidence_spans, sentence_rows

    todo: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        todo[(ex.question, ex.context)].append(i)
    out: dict[int, ForcedAnswer] = {}
    started = time.perf_counter()
    for n, ((question, context), rows) in enumerate(todo.items(), 1):
        answers = [examples[i].response for i in rows]
        sources = [Source.from_context(context)]
        gens = generator.teacher_force_many(question, sources, answers)
        for i, gen in zip(rows, gens, strict=True):
            hit = None
            if not examples[i].hallucinated and contains_answer(context, [examples[i].response]):
                top = evidence_spans(gen, sources, limit=1)
                hit = bool(top) and contains_answer(top[0].text, [examples[i].response])
            sentences = [pool(gen, r) for _, r in sentence_rows(gen) if bool(r.any())]
            out[i] = ForcedAnswer(pool(gen), sentences, hit)
        if progress and (n % 20 == 0 or n == len(todo)):
            elapsed = time.perf_counter() - started
            left = elapsed / n * (len(todo) - n)
            progress(f"  {n}/{len(todo)} prompts, {elapsed:.0f} s (~{left:.0f} s left)")
    return [out[i] for i in range(len(examples))]


def unsupported_words(ex: DetectExample) -> float:
    """Share of the response's words found in neither the context nor the question."""
    seen = set(words(f"{ex.context} {ex.question}"))
    answer = words(ex.response)
    return sum(w not in seen for w in answer) / len(answer) if answer else 0.0


@dataclass
class SetScores:
    """AUROCs (hallucinated = positive) of the detector and its baselines on one set of lines."""

    n: int
    n_hallucinated: int
    detector: float
    detector_ci: Interval
    lookback: float
    lookback_ci: Interval
    length: float
    length_ci: Interval
    overlap: float
    f1: float  # the detector's, at its threshold
    evidence_precision: Estimate  # faithful answers in their context: top evidence span holds them


@dataclass
class DetectReport:
    """`rag eval detect` output: the whole file, then each set in it."""

    all: SetScores
    by_source: dict[str, SetScores]
    threshold: float
    detector: str
    generator: str
    seconds: float = 0.0
    sets: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def score_set(
    detector: Detector, examples: Sequence[DetectExample], forced: Sequence[ForcedAnswer]
) -> SetScores:
    y = np.array([ex.hallucinated for ex in examples], dtype=bool)
    det = [f.risk(detector) for f in forced]
    lookback = [1.0 - float(f.answer.lookback.mean()) for f in forced]
    length = [float(f.answer.n_tokens) for f in forced]
    hits = [f.evidence_hit for f in forced if f.evidence_hit is not None]
    return SetScores(
        n=len(y), n_hallucinated=int(y.sum()),
        detector=auroc(det, y), detector_ci=auroc_ci(det, y),
        lookback=auroc(lookback, y), lookback_ci=auroc_ci(lookback, y),
        length=auroc(length, y), length_ci=auroc_ci(length, y),
        overlap=auroc([unsupported_words(ex) for ex in examples], y),
        f1=f1_at(det, y, detector.threshold),
        evidence_precision=Estimate(*share(sum(hits), len(hits)), len(hits)),
    )


def report(detector: Detector, examples: Sequence[DetectExample], forced: Sequence[ForcedAnswer],
           generator_name: str = "") -> DetectReport:
    by_source = {}
    for name in sorted({ex.source for ex in examples if ex.source}):
        keep = [i for i, ex in enumerate(examples) if ex.source == name]
        by_source[name] = score_set(detector, [examples[i] for i in keep], [forced[i] for i in keep])
    return DetectReport(all=score_set(detector, examples, forced), by_source=by_source,
                        threshold=detector.threshold, detector=detector.method, generator=generator_name,
                        sets=list(by_source))


def evaluate_file(
    path: Path, settings: Any, detector_path: Path | None = None, split: str | None = None,
    progress: ProgressFn | None = _stderr,
) -> DetectReport:
    """Teacher-force every line of the file and score the detector shipped for the generator."""
    from rag.evaluation.detect_data import read_examples
    from rag.generate.generator import Generator

    t0 = time.perf_counter()
    examples = read_examples(path, split)
    if not examples:
        raise ValueError(f"{path}: no lines" + (f" in split {split!r}" if split else ""))
    generator = Generator.load(settings)
    detector = Detector.load(detector_path) if detector_path else Detector.for_generator(generator.name)
    if not detector.fits(generator.n_layers, generator.n_heads):
        detector = Detector.baseline()
    result = report(detector, examples, extract(generator, examples, progress), generator.name)
    result.seconds = time.perf_counter() - t0
    return result


def _row(name: str, s: SetScores) -> str:
    def ci(v: float, c: Interval) -> str:
        return f"{v:.3f} [{c[0]:.2f}, {c[1]:.2f}]"

    return (f"{name:<18} {s.n:>5} {s.n_hallucinated:>5}  {ci(s.detector, s.detector_ci):<20} "
            f"{ci(s.lookback, s.lookback_ci):<20} {ci(s.length, s.length_ci):<20} "
            f"{s.overlap:.3f}   {s.f1:.3f}  {s.evidence_precision if s.evidence_precision.n else '-'}")


def format_report(r: DetectReport) -> str:
    lines = [
        f"generator {r.generator}; detector: {r.detector} (threshold {r.threshold:.3f}); {r.seconds:.0f} s",
        "AUROC, hallucinated = positive, with 95% bootstrap intervals",
        f"{'set':<18} {'n':>5} {'hallu':>5}  {'detector':<20} {'1 - lookback':<20} {'length alone':<20} "
        "overlap F1     evidence precision (faithful answers in their context)",
        _row("(all lines)", r.all),
    ]
    lines += [_row(name, s) for name, s in r.by_source.items()]
    return "\n".join(lines)
