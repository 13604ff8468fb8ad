"""The numbers every evaluation reports, in one place: AUROC with a bootstrap interval, shares with a
Wilson interval, the thresholds calibrated for a stated target, and SQuAD's answer matching."""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Scores = Sequence[float] | np.ndarray
Labels = Sequence[bool] | Sequence[int] | np.ndarray
Interval = tuple[float, float]


@dataclass
class Estimate:
    """A measured share or rate with its 95% interval and the count it rests on."""

    value: float
    ci: Interval
    n: int

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.ci[0]:.3f}, {self.ci[1]:.3f}] (n {self.n})"
NAN_INTERVAL: Interval = (float("nan"), float("nan"))


def auroc(scores: Scores, labels: Labels) -> float:
    """Area under the ROC curve: the chance that a random positive (label 1) scores above a random
    negative, ties counting half (the Mann-Whitney rank form: fast enough to bootstrap a thousand
    times, where sklearn's roc_auc_score takes milliseconds a call). NaN when a class is absent."""
    from scipy.stats import rankdata

    y = np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(np.asarray(scores, dtype=np.float64))
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auroc_ci(scores: Scores, labels: Labels, n_boot: int = 1000, seed: int = 0) -> Interval:
    """95% bootstrap interval of the AUROC (lines resampled with replacement)."""
    return _boot(lambda i: auroc(np.asarray(scores)[i], np.asarray(labels)[i]), len(labels), n_boot, seed)


def _boot(stat: object, n: int, n_boot: int, seed: int) -> Interval:
    rng = np.random.default_rng(seed)
    values = [v for _ in range(n_boot) if np.isfinite(v := stat(rng.integers(0, n, n)))]  # type: ignore[operator]
    if not values or n == 0:
        return NAN_INTERVAL
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)


def share(hits: int, n: int) -> tuple[float, Interval]:
    """hits / n with its 95% Wilson interval (NaN for n = 0)."""
    if n == 0:
        return float("nan"), NAN_INTERVAL
    from scipy.stats import binomtest

    ci = binomtest(hits, n).proportion_ci(method="wilson")
    return hits / n, (float(ci.low), float(ci.high))


def f1_at(scores: Scores, labels: Labels, threshold: float) -> float:
    """F1 of the positive class when score >= threshold predicts positive."""
    from sklearn.metrics import f1_score

    pred = np.asarray(scores, dtype=np.float64) >= threshold
    return float(f1_score(np.asarray(labels, dtype=bool), pred, zero_division=0.0))


def threshold_for_precision(scores: Scores, labels: Labels, target: float = 0.7) -> float:
    """The lowest cut-off whose flags are right at least `target` of the time (most recall at that
    precision); the cut-off with the best precision when none reaches it."""
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool)
    best, best_precision = float(np.max(s)) if len(s) else 0.5, -1.0
    for t in np.unique(s):
        p = float(y[s >= t].mean())
        if p >= target:
            return float(t)
        if p > best_precision:
            best, best_precision = float(t), p
    return best


def abstain_level(
    risk_answerable: Scores, n_answerable: int, already: int = 0, max_false: float = 0.2
) -> float:
    """The risk at which to hold answers back: the lowest level at which at most `max_false` of the
    `n_answerable` answerable questions end up abstained on (`already` were, without risk: declined
    or nothing retrieved), so that as many made-up answers as possible are caught.
    `risk_answerable`: the risks of the drafts for the others. Above 1 means never."""
    good = np.sort(np.asarray(risk_answerable, dtype=np.float64))
    allowed = int(np.floor(max_false * n_answerable)) - already  # drafts that may still be held back
    if not len(good) or allowed <= 0:
        return 1.01
    if allowed >= len(good):
        return 0.0
    return float(min(good[len(good) - allowed], 1.01))


# answers against gold answers (SQuAD's rules)


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
