"""`rag eval train-detector --own TRAIN --val VAL`: a detector trained and calibrated on the generator's
own answers, shipped only where it beats both baselines on answers it never saw.

TRAIN and VAL are folders written by `rag eval squad --save` (drafts with their pooled features and
own-answer labels, rag.evaluation.own_answers). The articles of the two splits are disjoint (split by
title hash), so a paragraph never sits on both sides. Steps:

1. For each feature set (rag.attribute.detector.FEATURE_SETS) and regularisation C, out-of-fold answer risks
   on TRAIN with folds grouped by article; the best out-of-fold AUROC chooses.
2. The chosen detector is refitted on all of TRAIN; its flag threshold (flags right halfway from
   the base rate to certainty, at least 0.7 of the time) and abstention level (false abstention
   <= 0.2) are set on the out-of-fold risks.
3. VAL, untouched until now, gives the figures next to both baselines: answer length alone and the
   untrained 1 - pooled lookback ratio. Unless the trained detector beats both out of fold and on
   VAL, with at least MIN_PER_CLASS drafts of each class there, the untrained score ships instead
   (its thresholds calibrated on TRAIN the same way).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rag.attribute.detector import (
    DETECTOR_DIR,
    FEATURE_PARTS,
    FEATURE_SETS,
    Detector,
    feature_parts,
    generator_slug,
)
from rag.evaluation.metrics import auroc, threshold_for_precision
from rag.evaluation.own_answers import OwnAnswers
from rag.evaluation.squad import (
    MAX_FALSE_ABSTENTION,
    SquadReport,
    fitted_abstain_risk,
    format_report,
    summarise,
)

C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0)
# A flag must be right clearly more often than a guess: at least 0.7, and at least halfway from the
# base rate to certainty (with 70% of a small model's drafts wrong, "precision >= 0.7" would flag all).
FLAG_PRECISION = 0.7
FLAG_PRECISION_GAIN = 0.5
# fewer validation drafts of either class than this, and an AUROC says nothing (its interval spans
# most of [0, 1]): the trained detector does not ship on such evidence
MIN_PER_CLASS = 20


@dataclass
class TrainResult:
    generator: str
    shipped: str  # "trained" or "baseline"
    feature_set: str
    c: float
    n_train: int  # labelled drafts
    cv_auroc: float  # out-of-fold, chosen configuration
    cv_baseline_auroc: float
    cv_length_auroc: float
    threshold: float
    abstain_risk: float
    candidates: list[dict[str, Any]]
    validation: dict[str, Any]  # SquadReport of the shipped detector on VAL (without questions)
    validation_trained: dict[str, Any]  # the same for the trained detector, shipped or not
    path: str = ""
    report: SquadReport | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("report")
        return d


def _labelled(own: OwnAnswers) -> list[int]:
    return [i for i, r in enumerate(own.results) if r.label is not None and own.answers[i] is not None]


def _fit(
    own: OwnAnswers, rows: Sequence[int], feature_set: str, c: float, shape: tuple[int, int]
) -> Detector:
    x = np.stack([own.answers[i].vector(feature_set) for i in rows])  # type: ignore[union-attr]
    y = np.array([own.results[i].label for i in rows])
    return Detector.fit(x, y, feature_set=feature_set, n_layers=shape[0], n_heads=shape[1], c=c)


def _varying(own: OwnAnswers, rows: list[int]) -> list[str]:
    """The feature sets every part of which varies over these drafts: drafts collected before a feature
    existed hold 0.0 for it, and a detector must not read (and pay for) what it never saw vary."""

    def varies(part: str) -> bool:
        x = np.stack([own.answers[i].vector(part) for i in rows])  # type: ignore[union-attr]
        return bool(np.ptp(x, axis=0).max() > 0)

    moving = {part for part in FEATURE_PARTS if varies(part)}
    return [fs for fs in FEATURE_SETS if set(feature_parts(fs)) <= moving]


def _folds(groups: Sequence[str], n: int = 5) -> list[np.ndarray]:
    """Row positions of each fold; every group (article) in exactly one fold."""
    from sklearn.model_selection import GroupKFold

    k = min(n, len(set(groups)))
    return [test for _, test in GroupKFold(n_splits=k).split(np.zeros(len(groups)), groups=groups)]


def _oof_risks(own: OwnAnswers, rows: list[int], feature_set: str, c: float,
               shape: tuple[int, int]) -> dict[int, float]:
    """Answer risk of each row from a detector fitted without its article."""
    groups = [own.results[i].title for i in rows]
    out: dict[int, float] = {}
    for fold in _folds(groups):
        held = {rows[j] for j in fold}
        train = [i for i in rows if i not in held]
        if len({own.results[i].label for i in train}) < 2:
            continue
        det = _fit(own, train, feature_set, c, shape)
        out.update({i: own.risk(i, det) for i in held})
    return out


def flag_precision_target(base_rate: float) -> float:
    return max(FLAG_PRECISION, base_rate + FLAG_PRECISION_GAIN * (1 - base_rate))


def _calibrate(det: Detector, own: OwnAnswers, risks: dict[int, float]) -> None:
    """Flag threshold and abstention level from held-out risks (index -> answer risk) on TRAIN."""
    rows = sorted(risks)
    bad = [own.results[i].label == 1 for i in rows]
    target = flag_precision_target(float(np.mean(bad)))
    det.threshold = threshold_for_precision([risks[i] for i in rows], bad, target)
    full = own.risks(det)  # for answerable drafts without a label (partial overlap)
    det.abstain_risk = fitted_abstain_risk(own.results, [risks.get(i, r) for i, r in enumerate(full)])


@dataclass
class Selection:
    """The detector chosen on TRAIN drafts (out of fold), and the untrained score, both calibrated there."""

    trained: Detector
    baseline: Detector
    feature_set: str
    c: float
    n_rows: int
    n_bad: int
    cv_auroc: float
    cv_baseline: float
    cv_length: float
    candidates: list[dict[str, Any]]


def select_detector(train: OwnAnswers, say: Callable[[str], None]) -> Selection:
    """Steps 1 and 2 of the module docstring: every feature set and C scored out of fold (folds grouped
    by `QuestionResult.title`), the best refitted on all of TRAIN, thresholds set out of fold."""
    shape = train.shape
    rows = _labelled(train)
    y = np.array([train.results[i].label for i in rows])
    if len(set(y.tolist())) < 2:
        raise ValueError("needs both grounded and ungrounded drafts to train on")
    baseline = Detector.baseline()
    base_risk = train.risks(baseline)
    cv_baseline = auroc([base_risk[i] or 0.0 for i in rows], y)
    cv_length = auroc([train.answers[i].n_tokens for i in rows], y)  # type: ignore[union-attr]
    say(f"{len(rows)} labelled drafts ({int(y.sum())} bad); out-of-fold baselines: 1 - lookback "
        f"{cv_baseline:.3f}, length {cv_length:.3f}")

    candidates, best = [], None
    for feature_set in _varying(train, rows):
        for c in C_GRID:
            risks = _oof_risks(train, rows, feature_set, c, shape)
            scored = [i for i in rows if i in risks]
            score = auroc([risks[i] for i in scored], [train.results[i].label == 1 for i in scored])
            candidates.append({"feature_set": feature_set, "c": c, "cv_auroc": round(score, 4)})
            say(f"  {feature_set:<17} C={c:<5} out-of-fold AUROC {score:.3f}")
            if best is None or score > best[0]:
                best = (score, feature_set, c, risks)
    assert best is not None
    cv_auroc, feature_set, c, oof = best

    trained = _fit(train, rows, feature_set, c, shape)
    _calibrate(trained, train, oof)
    _calibrate(baseline, train, {i: float(base_risk[i] or 0.0) for i in rows})
    return Selection(trained, baseline, feature_set, c, len(rows), int(y.sum()), cv_auroc, cv_baseline,
                     cv_length, candidates)


def risk_auroc(own: OwnAnswers, detector: Detector) -> float:
    """How well a detector's answer risks rank bad drafts above good ones, over the labelled drafts
    (the figure `summarise` reports, without its bootstrap interval)."""
    rows = _labelled(own)
    risks = own.risks(detector)
    return auroc([risks[i] or 0.0 for i in rows], [own.results[i].label == 1 for i in rows])


def calibrate_levels(det: Detector, own: OwnAnswers) -> None:
    """Set a detector's flag threshold and abstention level on drafts it was not fitted on."""
    rows = _labelled(own)
    risks = own.risks(det)
    _calibrate(det, own, {i: float(risks[i] or 0.0) for i in rows})


def train_own(
    train_dir: Path, val_dir: Path, out: Path | None = None, progress: Callable[[str], None] | None = None,
) -> TrainResult:
    say = progress or (lambda m: print(m, file=sys.stderr, flush=True))
    train, val = OwnAnswers.load(train_dir), OwnAnswers.load(val_dir)
    generator = train.generator
    if generator_slug(val.generator) != generator_slug(generator):
        raise ValueError(f"TRAIN drafts are {generator}'s, VAL drafts {val.generator}'s")
    overlap = {r.title for r in train.results} & {r.title for r in val.results}
    if overlap:
        raise ValueError(f"TRAIN and VAL share articles {sorted(overlap)[:3]}: use --split train / val")
    try:
        sel = select_detector(train, say)
    except ValueError as e:
        raise ValueError(f"{train_dir}: {e}") from e
    trained, baseline, feature_set, c = sel.trained, sel.baseline, sel.feature_set, sel.c
    cv_auroc, cv_baseline, cv_length = sel.cv_auroc, sel.cv_baseline, sel.cv_length
    val_trained = summarise(val, trained, generator=generator, split="val")
    val_baseline = summarise(val, baseline, generator=generator, split="val")
    best_baseline = max(val_trained.length_auroc.value, val_trained.lookback_auroc.value)
    enough = min(val_trained.n_bad, val_trained.n_good) >= MIN_PER_CLASS
    beats = enough and cv_auroc > max(cv_baseline, cv_length) and val_trained.risk_auroc.value > best_baseline
    shipped, report = (trained, val_trained) if beats else (baseline, val_baseline)
    shipped.meta = {
        "generator": generator,
        "trained_on": f"own answers of {generator} to SQuAD-2 dev questions (rag eval squad --split train): "
        f"{sel.n_rows} labelled drafts ({sel.n_bad} not grounded)" if beats else "nothing (untrained)",
        "labels": "rag.evaluation.own_answers.own_label: gold contained = grounded; token-F1 0 or an "
        "unanswerable question answered = not grounded",
        "chosen_by": "out-of-fold AUROC, folds grouped by article" if beats else
        "untrained: the trained detector did not beat both baselines out of fold and on validation, "
        f"or validation had under {MIN_PER_CLASS} drafts of a class",
        "feature_set": feature_set, "c": c, "cv_auroc": round(cv_auroc, 4),
        "cv_baseline_auroc": round(cv_baseline, 4), "cv_length_auroc": round(cv_length, 4),
        "threshold_target": f"precision of flags >= {flag_precision_target(sel.n_bad / sel.n_rows):.3f}, "
        "halfway from the base rate of bad drafts to 1, at least 0.7 (out-of-fold, TRAIN)",
        "abstain_target": f"false abstention <= {MAX_FALSE_ABSTENTION} (out-of-fold, TRAIN)",
        "validation": {
            "split": "val: articles never trained on (rag eval squad --split val)",
            "n_labelled": val_trained.n_bad + val_trained.n_good, "n_bad": val_trained.n_bad,
            "auroc": round(report.risk_auroc.value, 4),
            "auroc_ci95": [round(x, 4) for x in report.risk_auroc.ci],
            "trained_auroc": round(val_trained.risk_auroc.value, 4),
            "length_auroc": round(val_trained.length_auroc.value, 4),
            "lookback_baseline_auroc": round(val_trained.lookback_auroc.value, 4),
            "useful": round(report.useful.value, 4), "abstention": round(report.abstention.value, 4),
            "false_abstention": round(report.false_abstention.value, 4),
        },
        "command": "rag eval train-detector --own TRAIN --val VAL",
    }
    path = out or DETECTOR_DIR / f"{generator_slug(generator)}.json"
    shipped.save(path)
    return TrainResult(
        generator=generator, shipped="trained" if beats else "baseline", feature_set=feature_set, c=c,
        n_train=sel.n_rows, cv_auroc=cv_auroc, cv_baseline_auroc=cv_baseline, cv_length_auroc=cv_length,
        threshold=shipped.threshold, abstain_risk=shipped.abstain_risk, candidates=sel.candidates,
        validation=report.to_dict(with_questions=False),
        validation_trained=val_trained.to_dict(with_questions=False), path=str(path), report=report,
    )


def format_train(r: TrainResult) -> str:
    lines = [
        f"generator {r.generator}: {r.n_train} labelled drafts; chose {r.feature_set!r} C={r.c} "
        f"(out-of-fold AUROC {r.cv_auroc:.3f}; 1 - lookback {r.cv_baseline_auroc:.3f}, "
        f"length {r.cv_length_auroc:.3f})",
        f"validation (articles never trained on): trained detector AUROC "
        f"{r.validation_trained['risk_auroc']['value']:.3f}",
        f"shipped: {r.shipped} -> {r.path} (flag at {r.threshold:.3f}, abstain at {r.abstain_risk:.3f})",
    ]
    if r.report is not None:
        lines.append(format_report(r.report))
    return "\n".join(lines)
