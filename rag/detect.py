"""Hallucination risk from where the generator looked (Lookback Lens, Chuang et al., 2024).

A claim the model read off its sources is written while attending to them; a made-up one is written
while attending to its own answer. The feature per layer and head is the lookback ratio pooled over
a set of answer tokens (a sentence, or the whole answer):

    ratio[l, h] = Σ_t chunk_mass[t, l, h] / (Σ_t chunk_mass[t, l, h] + Σ_t generated_mass[t, l, h])

Pooling the masses before taking the ratio separated hallucinated answers far better in trials than
averaging per-token ratios: early tokens have almost no answer to look back on, so their ratios are
~1 whatever they say. A logistic regression over these L*H ratios gives the risk.

The weights ship in `rag/detector/lookback.json` (written by `Detector.save`, read by `Detector.load`):

    {"method": str, "threshold": float, "n_layers": int, "n_heads": int,
     "mean": [L*H floats], "scale": [L*H floats], "coef": [L*H floats], "intercept": float,
     "meta": {"generator": str, "trained_on": str, "n": int, "auroc": float, ...}}

Features are flattened layer-major: index l * n_heads + h. Until a trained file exists, `load()`
returns the documented baseline (see `Detector.baseline`).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rag.generate import FIRST_CHUNK, GENERATED

DEFAULT_PATH = Path(__file__).parent / "detector" / "lookback.json"
BASELINE_METHOD = "baseline: 1 - pooled lookback ratio, rescaled (untrained)"


def features(masses: torch.Tensor, tokens: torch.Tensor | None = None) -> np.ndarray:
    """Pooled lookback ratio per layer and head over the chosen answer tokens.

    masses: (T, L, H, S) from `Generation.features`; tokens: (T,) bool, default all.
    Returns (L*H,) float64, layer-major. With no tokens the ratio is 1 (nothing was made up)."""
    if tokens is not None:
        masses = masses[tokens]
    chunks = masses[..., FIRST_CHUNK:].sum(dim=(0, -1)).double()  # (L, H)
    answer = masses[..., GENERATED].sum(dim=0).double()  # (L, H)
    ratio = torch.where(chunks + answer > 0, chunks / (chunks + answer), torch.ones_like(chunks))
    return ratio.flatten().numpy()


@dataclass
class Detector:
    """Risk in [0, 1] from `features(...)`; `flagged` means risk >= threshold."""

    method: str
    threshold: float
    n_layers: int | None = None  # None: the baseline, which fits any model
    n_heads: int | None = None
    mean: list[float] | None = None  # standardisation, then logistic regression
    scale: list[float] | None = None
    coef: list[float] | None = None
    intercept: float = 0.0
    # baseline only: mean ratio at or above `high` -> risk 0, at or below `low` -> risk 1
    low: float = 0.0
    high: float = 1.0
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def baseline(cls) -> Detector:
        """Untrained: risk = (high - mean ratio) / (high - low), clipped to [0, 1].

        The mean over layers and heads of the pooled lookback ratio, rescaled so that the range
        SmolLM2-135M spans on HaluEval QA answers teacher-forced with their knowledge (faithful
        answers mostly above `high`, hallucinated ones reaching `low`) maps onto [0, 1]."""
        return cls(method=BASELINE_METHOD, threshold=0.5, low=0.45, high=0.75,
                   meta={"note": "replace by training a logistic regression: see Detector.fit"})

    @classmethod
    def load(cls, path: Path | None = None) -> Detector:
        """The shipped detector (or the one at `path`); the baseline when no file is shipped yet."""
        path = path or DEFAULT_PATH
        if not path.exists():
            if path == DEFAULT_PATH:
                return cls.baseline()
            raise FileNotFoundError(f"no detector file at {path}")
        return cls(**json.loads(path.read_text()))

    def save(self, path: Path | None = None) -> None:
        path = path or DEFAULT_PATH
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=1) + "\n")

    @property
    def trained(self) -> bool:
        return self.coef is not None

    def fits(self, n_layers: int, n_heads: int) -> bool:
        """Whether this detector's weights were trained on a model of this shape."""
        return not self.trained or (self.n_layers, self.n_heads) == (n_layers, n_heads)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """x: (F,) or (N, F) features -> risk () or (N,) in [0, 1]."""
        x = np.asarray(x, dtype=np.float64)
        if not self.trained:
            return np.clip((self.high - x.mean(axis=-1)) / (self.high - self.low), 0.0, 1.0)
        assert self.mean is not None and self.scale is not None and self.coef is not None
        z = (x - np.asarray(self.mean)) / np.asarray(self.scale)
        return 1.0 / (1.0 + np.exp(-(z @ np.asarray(self.coef) + self.intercept)))

    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        y: np.ndarray,
        *,
        n_layers: int,
        n_heads: int,
        c: float = 0.1,
        threshold: float | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Detector:
        """Standardise and fit an L2 logistic regression on (N, L*H) features, y = 1 for hallucinated.

        Without a threshold, the one maximising F1 on (x, y) is chosen; pass one chosen on held-out
        data when there is enough of it."""
        from sklearn.linear_model import LogisticRegression

        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.int64)
        if x.shape[1] != n_layers * n_heads:
            raise ValueError(f"expected {n_layers * n_heads} features per row, got {x.shape[1]}")
        mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
        model = LogisticRegression(C=c, max_iter=2000).fit((x - mean) / scale, y)
        detector = cls(
            method="lookback-lens: logistic regression on pooled lookback ratios per layer and head",
            threshold=0.5,
            n_layers=n_layers,
            n_heads=n_heads,
            mean=mean.tolist(),
            scale=scale.tolist(),
            coef=model.coef_[0].tolist(),
            intercept=float(model.intercept_[0]),
            meta=dict(meta or {}),
        )
        detector.threshold = threshold if threshold is not None else best_f1_threshold(detector.predict(x), y)
        return detector


def best_f1_threshold(risk: np.ndarray, y: np.ndarray) -> float:
    """The risk cut-off that maximises F1 for label 1 (hallucinated)."""
    best, best_f1 = 0.5, -1.0
    for t in np.unique(risk):
        pred = risk >= t
        tp = float(np.sum(pred & (y == 1)))
        f1 = 2 * tp / (np.sum(pred) + np.sum(y == 1)) if tp else 0.0
        if f1 > best_f1 and math.isfinite(t):
            best, best_f1 = float(t), f1
    return best
