"""Hallucination risk from where the generator looked and how sure it was.

A claim the model read off its sources is written while attending to them; a made-up one is written
while attending to its own answer (Lookback Lens, Chuang et al., 2024, arXiv:2407.07071), and with
less confidence. For a set of answer tokens (a sentence, or the whole answer) `pool` computes:

    lookback[l, h] = Σ_t ctx[t, l, h] / (Σ_t ctx[t, l, h] + Σ_t gen[t, l, h])
    density[l, h]  = the same ratio of per-key masses: ctx / n_context_keys and gen / t (answer token
                     t sees t earlier answer tokens), so that a short source or a long answer does
                     not move the ratio by its size alone: a two-sentence document holds few keys and
                     draws little raw mass even when it is read closely
    logprob        = the min and mean over the tokens of log p(token): the model's own confidence
    decline        = log p, at the answer's first position, of the token the instruction's decline
                     reply starts with ("I don't know."): how near the model came to saying the
                     sources lack the answer. One value per answer, shared by its sentences; it costs
                     nothing, as the first position's logits are computed anyway

Pooling the masses before taking a ratio separated hallucinated answers far better than averaging
per-token ratios: early tokens have almost no answer to look back on, so their ratios are ~1.

Nothing else is read: a self-check turn, agreement between drafts or with a second generator,
retrieval scores and hidden-state probes, measured on the generators' own SQuAD drafts, were no
better than the risk alone or added to it within noise (figures: docs/history.md#features-tried-and-dropped).

A detector is a logistic regression over one `FEATURE_SETS` entry, or the untrained baseline
1 - mean lookback. One file per generator ships in ``rag/attribute/detectors/<generator>.json`` (written by
`Detector.save`, read by `Detector.for_generator`), with the data it was trained on, its AUROCs on
an untouched validation split next to both baselines, and its calibrated thresholds.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from rag.generate.attention import FIRST_CHUNK, GENERATED

if TYPE_CHECKING:
    from rag.generate.decoding import Generation

DETECTOR_DIR = Path(__file__).parent / "detectors"
BASELINE_METHOD = "baseline: 1 - pooled lookback ratio (untrained)"
FEATURE_PARTS = ("lookback", "density", "logprob", "decline")
# "all" is the three attention and confidence parts, as detector files written before "decline" name it
FEATURE_SETS = ("lookback", "density", "logprob", "lookback+logprob", "density+logprob", "all", "decline",
                "logprob+decline", "lookback+logprob+decline", "density+logprob+decline",
                "lookback+density+logprob+decline")


def feature_parts(feature_set: str) -> tuple[str, ...]:
    """The parts a feature set names, in vector order."""
    return ("lookback", "density", "logprob") if feature_set == "all" else tuple(feature_set.split("+"))


@dataclass(frozen=True)
class Pooled:
    """What a set of answer tokens leaves for the detector (see the module docstring)."""

    lookback: np.ndarray  # (L*H,) layer-major: index l * n_heads + h
    density: np.ndarray  # (L*H,)
    logprob_min: float
    logprob_mean: float
    n_tokens: int
    decline: float = 0.0

    def vector(self, feature_set: str) -> np.ndarray:
        parts = {
            "lookback": self.lookback,
            "density": self.density,
            "logprob": np.array([self.logprob_min, self.logprob_mean]),
            "decline": np.array([self.decline]),
        }
        return np.concatenate([parts[n] for n in feature_parts(feature_set)])


def pool(generation: Generation, tokens: torch.Tensor | None = None) -> Pooled:
    """Pooled features of the chosen answer tokens ((T,) bool, default all). With no tokens the
    ratios are 1 and the log-probabilities 0: nothing was made up."""
    masses = generation.features  # (T, L, H, S)
    T = masses.shape[0]
    n_context = max(sum(s >= FIRST_CHUNK for s in generation.prompt.segments), 1)
    seen = torch.arange(T, dtype=torch.float64).clamp_min(1.0)[:, None, None]  # answer keys per token
    ctx = masses[..., FIRST_CHUNK:].sum(-1).double()  # (T, L, H)
    gen = masses[..., GENERATED].double()
    logprobs = torch.tensor(generation.logprobs, dtype=torch.float64)
    if tokens is not None:
        ctx, gen, seen, logprobs = ctx[tokens], gen[tokens], seen[tokens], logprobs[tokens]
    return Pooled(
        lookback=_ratio(ctx.sum(0), gen.sum(0)),
        density=_ratio((ctx / n_context).sum(0), (gen / seen).sum(0)),
        logprob_min=float(logprobs.min()) if len(logprobs) else 0.0,
        logprob_mean=float(logprobs.mean()) if len(logprobs) else 0.0,
        n_tokens=len(logprobs),
        decline=generation.decline_logprob,
    )


def _ratio(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    total = a + b
    return torch.where(total > 0, a / total.clamp_min(1e-300), torch.ones_like(a)).flatten().numpy()


def generator_slug(name: str) -> str:
    """The detector file's stem for a generator name; quantization does not change the file."""
    base = name.removesuffix("+int8")
    return re.sub(r"[^\w.-]+", "_", base)


def calibrated_path(calibration_dir: Path, generator: str) -> Path:
    """Where `rag calibrate` writes a generator's detector in a workspace."""
    return calibration_dir / generator_slug(generator) / "detector.json"


@dataclass
class Detector:
    """Risk in [0, 1] from `Pooled` features; `flagged` means risk >= threshold."""

    method: str
    threshold: float
    abstain_risk: float = 1.01  # the answer is held back at this risk (above 1: never)
    feature_set: str = "lookback"
    n_layers: int | None = None  # None: the baseline, which fits any model
    n_heads: int | None = None
    mean: list[float] | None = None  # standardisation, then logistic regression
    scale: list[float] | None = None
    coef: list[float] | None = None
    intercept: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def baseline(cls, threshold: float = 0.5, abstain_risk: float = 1.01) -> Detector:
        """Untrained: risk = 1 - the mean over layers and heads of the pooled lookback ratio."""
        return cls(method=BASELINE_METHOD, threshold=threshold, abstain_risk=abstain_risk)

    @classmethod
    def load(cls, path: Path) -> Detector:
        return cls(**json.loads(path.read_text()))

    @classmethod
    def for_generator(
        cls, name: str, directory: Path | None = None, calibrated: Path | None = None
    ) -> Detector:
        """The workspace's own calibration for this generator where `rag calibrate` put it in use (it beat
        the shipped detector on the workspace's held-out drafts), else the detector shipped for it; the
        untrained baseline when neither is. ``calibrated``: the workspace's calibration folder."""
        if calibrated is not None:
            own = calibrated_path(calibrated, name)
            if own.exists() and (detector := cls.load(own)).meta.get("in_use"):
                return detector
        path = (directory or DETECTOR_DIR) / f"{generator_slug(name)}.json"
        return cls.load(path) if path.exists() else cls.baseline()

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=1) + "\n")

    @property
    def trained(self) -> bool:
        return self.coef is not None

    def fits(self, n_layers: int, n_heads: int) -> bool:
        """Whether this detector's weights were trained on a model of this shape."""
        return not self.trained or (self.n_layers, self.n_heads) == (n_layers, n_heads)

    def risk(self, pooled: Pooled) -> float:
        if not self.trained:
            return float(np.clip(1.0 - pooled.lookback.mean(), 0.0, 1.0))
        return float(self.predict(pooled.vector(self.feature_set)))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """x: (F,) or (N, F) vectors of `feature_set` -> risk () or (N,) in [0, 1] (trained only)."""
        assert self.mean is not None and self.scale is not None and self.coef is not None
        from scipy.special import expit  # the logistic function, without overflow warnings

        z = (np.asarray(x, dtype=np.float64) - np.asarray(self.mean)) / np.asarray(self.scale)
        return expit(z @ np.asarray(self.coef) + self.intercept)

    @classmethod
    def fit(
        cls, x: np.ndarray, y: np.ndarray, *, feature_set: str, n_layers: int, n_heads: int, c: float,
        meta: dict[str, Any] | None = None,
    ) -> Detector:
        """Standardise and fit an L2 logistic regression, y = 1 for hallucinated. Thresholds are set
        by the caller, on data the fit did not see."""
        from sklearn.linear_model import LogisticRegression

        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.int64)
        # a feature constant in training gets no weight; scale 1 keeps it at no weight wherever it varies
        std = x.std(axis=0)
        mean, scale = x.mean(axis=0), np.where(std > 1e-9, std + 1e-6, 1.0)
        model = LogisticRegression(C=c, max_iter=5000).fit((x - mean) / scale, y)
        return cls(
            method=f"lookback-lens: logistic regression on {feature_set} features",
            threshold=0.5,
            feature_set=feature_set,
            n_layers=n_layers,
            n_heads=n_heads,
            mean=mean.tolist(),
            scale=scale.tolist(),
            coef=model.coef_[0].tolist(),
            intercept=float(model.intercept_[0]),
            meta=dict(meta or {}),
        )
