"""`rag eval detect` and the detector's training: teacher-force labelled answers through the generator,
pool their attention masses (rag.detect.features), and measure or fit the Lookback-Lens detector.

Each line ``{question, context, response, hallucinated}`` is run with its context as one source, as
`rag attribute --context` does. Answers to the same (question, context) share one forward pass over
the prompt (`teacher_force_many`). What one answer leaves behind (`AnswerFeatures`) is small and
cached in ``RAG_HOME/eval-cache/<generator>.npz``, so re-running an evaluation, or training with other
settings, costs no model time.

Scores compared on the same lines (AUROC, hallucinated = positive):

- ``detector``: the risk the product reports (rag.attribution): the detector on each sentence's pooled
  lookback ratios per layer and head, the answer's risk being its riskiest sentence's.
- ``baseline``: untrained, 1 - the mean over layers and heads of the answer's pooled lookback ratio.
- ``token_mean``: the same, but averaging per-token ratios instead of pooling masses first.
- ``length``: the answer's length in tokens alone. Reported because on HaluEval the hallucinated
  answers are much longer; a detector that only learned length is worth little.
- ``overlap``: no model, the share of the answer's words found in neither context nor question: how
  far plain string matching gets (on answer-swap data, far).
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from rag.detect import Detector, best_f1_threshold, features
from rag.evaluation.detect_data import DetectExample

if TYPE_CHECKING:
    from rag.generate import Generation, Generator

ProgressFn = Callable[[str], None]
Scores = Sequence[float] | np.ndarray
Labels = Sequence[bool] | Sequence[int] | np.ndarray


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------
# metrics


def auroc(scores: Scores, labels: Labels) -> float:
    """Area under the ROC curve: the chance that a random positive scores above a random negative
    (ties count half). NaN when either class is absent."""
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    from scipy.stats import rankdata

    ranks = rankdata(s)  # ties get their average rank
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auroc_gap_ci(
    a: Scores, b: Scores, labels: Labels, n_boot: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """95% bootstrap interval of AUROC(a) - AUROC(b) on the same lines (resampled together)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    rng = np.random.default_rng(seed)
    gaps = []
    for _ in range(n_boot):
        i = rng.integers(0, len(y), len(y))
        if y[i].all() or not y[i].any():
            continue
        gaps.append(auroc(a[i], y[i]) - auroc(b[i], y[i]))
    if not gaps:
        return float("nan"), float("nan")
    lo, hi = np.percentile(gaps, [2.5, 97.5])
    return float(lo), float(hi)


def f1_at(scores: Scores, labels: Labels, threshold: float) -> float:
    """F1 of the positive class when score >= threshold predicts positive."""
    pred = np.asarray(scores, dtype=np.float64) >= threshold
    y = np.asarray(labels, dtype=bool)
    tp = int((pred & y).sum())
    denom = int(pred.sum()) + int(y.sum())
    return 2 * tp / denom if denom else 0.0


# --------------------------------------------------------------------------------------------------
# teacher forcing several answers over one prompt


def context_source(context: str) -> Any:
    """The context as the single source, as `Rag.attribute(context=...)` builds it."""
    from rag.types import Source

    return Source(1, 0, 0, "(context)", "context", context, 0, len(context), 1.0)


@torch.inference_mode()
def teacher_force_many(
    generator: Generator, question: str, sources: Sequence[Any], answers: Sequence[str]
) -> list[Generation]:
    """`Generator.teacher_force` for several answers to one prompt: the prompt (less its last token)
    is run once, then each answer from a copy of its KV cache. Masses match teacher_force's up to
    float rounding (tests/test_eval.py checks)."""
    from transformers import DynamicCache

    from rag.generate import AttentionReducer, Generation

    prompt = generator.build_prompt(question, sources)
    P, start = len(prompt.token_ids), prompt.prefix_len
    model, device = generator.model, generator.device
    shared = generator._new_cache(prompt)
    if start < P - 1:
        model(
            input_ids=torch.tensor([prompt.token_ids[start : P - 1]], device=device),
            past_key_values=shared,
            use_cache=True,
            logits_to_keep=1,
        )
    kv: list[tuple[torch.Tensor, torch.Tensor]] = [
        (cast(Any, layer).keys, cast(Any, layer).values) for layer in shared.layers
    ]
    out = []
    for answer in answers:
        t0 = time.perf_counter()
        enc = generator.tokenizer(answer, add_special_tokens=False, return_offsets_mapping=True)
        ids: list[int] = enc["input_ids"]
        T = len(ids)
        feats = torch.zeros(T, generator.n_layers, generator.n_heads, prompt.n_segments, device=device)
        if T:
            cache = DynamicCache(config=model.config)
            for layer, (k, v) in enumerate(kv):
                cache.update(k, v, layer)
            reducer = AttentionReducer(generator._membership(prompt, T))
            reducer.target(slice(0, T), feats)
            model(
                input_ids=torch.tensor([[prompt.token_ids[P - 1], *ids[:-1]]], device=device),
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
                attention_reducer=reducer,
            )
            generator._check_reduced(reducer)
        out.append(
            Generation(
                text=answer,
                token_ids=ids,
                offsets=[(int(s), int(e)) for s, e in enc["offset_mapping"]],
                features=feats.cpu(),
                prompt=prompt,
                stop_reason="teacher_forced",
                prefill_ms=(time.perf_counter() - t0) * 1000,
                decode_ms=0.0,
            )
        )
    return out


# --------------------------------------------------------------------------------------------------
# what one answer leaves behind


@dataclass
class AnswerFeatures:
    """Pooled attention of one teacher-forced answer."""

    pooled: np.ndarray  # (L, H, 5) summed masses on sink, instruction, question, answer so far, chunks
    token_ratio: np.ndarray  # (L, H) mean over tokens of the per-token lookback ratio
    sentences: np.ndarray  # (n_sentences, L*H) rag.detect.features per sentence, as attribution uses
    n_tokens: int

    @property
    def ratio(self) -> np.ndarray:
        """(L*H,) the whole answer's pooled lookback ratio per layer and head (rag.detect.features)."""
        chunks, answer = self.pooled[..., 4].astype(np.float64), self.pooled[..., 3].astype(np.float64)
        total = chunks + answer
        return np.where(total > 0, chunks / np.where(total > 0, total, 1), 1.0).ravel()


def answer_features(generation: Generation) -> AnswerFeatures:
    from rag.attribution import sentence_of_tokens, split_sentences
    from rag.generate import FIRST_CHUNK, GENERATED, INSTRUCTION, QUESTION, SINK

    m = generation.features  # (T, L, H, S)
    T = m.shape[0]
    chunks_t, answer_t = m[..., FIRST_CHUNK:].sum(-1), m[..., GENERATED]  # (T, L, H)
    pooled = torch.stack(
        [
            m[..., SINK].sum(0),
            m[..., INSTRUCTION].sum(0),
            m[..., QUESTION].sum(0),
            answer_t.sum(0),
            chunks_t.sum(0),
        ],
        dim=-1,
    )
    denom = chunks_t + answer_t
    token_ratio = torch.where(denom > 0, chunks_t / denom.clamp_min(1e-12), torch.ones_like(denom))
    spans = split_sentences(generation.text)
    owner = torch.tensor(sentence_of_tokens(generation.offsets, spans), dtype=torch.long)
    sentences = [features(m, owner == i) for i in range(len(spans)) if bool((owner == i).any())]
    n_features = m.shape[1] * m.shape[2]
    return AnswerFeatures(
        pooled=pooled.numpy().astype(np.float32),
        token_ratio=(token_ratio.mean(0) if T else torch.ones(m.shape[1:3])).numpy().astype(np.float32),
        sentences=np.array(sentences, dtype=np.float32).reshape(-1, n_features),
        n_tokens=T,
    )


class FeatureStore:
    """AnswerFeatures by (generator, question, context, response), saved as one .npz per generator."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.items: dict[str, AnswerFeatures] = {}
        self.dirty = 0
        if path is not None and path.exists():
            with np.load(path, allow_pickle=False) as z:  # each z[name] reads the whole array: once
                keys, pooled, token_ratio = z["keys"].tolist(), z["pooled"], z["token_ratio"]
                sentences, offsets, n_tokens = z["sentences"], z["sent_offsets"], z["n_tokens"]
            for i, key in enumerate(keys):
                self.items[key] = AnswerFeatures(
                    pooled[i], token_ratio[i], sentences[offsets[i] : offsets[i + 1]], int(n_tokens[i])
                )

    @staticmethod
    def key(generator_name: str, ex: DetectExample) -> str:
        text = "\x1f".join((generator_name, ex.question, ex.context, ex.response))
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def save(self) -> None:
        if self.path is None or not self.items or not self.dirty:
            return
        keys = list(self.items)
        values = [self.items[k] for k in keys]
        sizes = [len(v.sentences) for v in values]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + f".{os.getpid()}.tmp.npz")
        np.savez(
            tmp,
            keys=np.array(keys),
            pooled=np.stack([v.pooled for v in values]),
            token_ratio=np.stack([v.token_ratio for v in values]),
            sentences=np.concatenate([v.sentences for v in values]),
            sent_offsets=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
            n_tokens=np.array([v.n_tokens for v in values], dtype=np.int64),
        )
        os.replace(tmp, self.path)
        self.dirty = 0


def cache_path(home: Path, generator_name: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in generator_name)
    return home / "eval-cache" / f"{safe}.npz"


def extract(
    generator: Generator,
    examples: Sequence[DetectExample],
    store: FeatureStore,
    progress: ProgressFn | None = _stderr,
    save_every: int = 50,
) -> list[AnswerFeatures]:
    """Features of every example, from the store where present, else teacher-forced (grouped by
    prompt) and added to it."""
    keys = [store.key(generator.name, ex) for ex in examples]
    todo: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, (key, ex) in enumerate(zip(keys, examples, strict=True)):
        if key not in store.items:
            todo[(ex.question, ex.context)].append(i)
    if todo and progress:
        progress(
            f"teacher-forcing {sum(map(len, todo.values()))} answers over {len(todo)} prompts "
            f"({len(examples) - sum(map(len, todo.values()))} cached)"
        )
    started, done = time.perf_counter(), 0
    for n, ((question, context), rows) in enumerate(todo.items(), 1):
        answers = list(dict.fromkeys(examples[i].response for i in rows))
        gens = teacher_force_many(generator, question, [context_source(context)], answers)
        by_answer = {a: answer_features(g) for a, g in zip(answers, gens, strict=True)}
        for i in rows:
            store.items[keys[i]] = by_answer[examples[i].response]
        done += len(rows)
        store.dirty += len(rows)
        if store.dirty >= save_every:
            store.save()
        if progress and (n % 10 == 0 or n == len(todo)):
            elapsed = time.perf_counter() - started
            progress(
                f"  {n}/{len(todo)} prompts, {done} answers, {elapsed:.0f} s "
                f"(~{elapsed / n * (len(todo) - n):.0f} s left)"
            )
    store.save()
    return [store.items[k] for k in keys]


# --------------------------------------------------------------------------------------------------
# scoring

_WORD = re.compile(r"\w+")


def unsupported_words(ex: DetectExample) -> float:
    """Share of the response's words found in neither the context nor the question: a string-matching
    yardstick with no model at all (an answer copied from the context scores 0)."""
    seen = set(_WORD.findall(f"{ex.context} {ex.question}".lower()))
    words = _WORD.findall(ex.response.lower())
    return sum(w not in seen for w in words) / len(words) if words else 0.0


def answer_risk(detector: Detector, f: AnswerFeatures) -> float:
    """The answer-level risk rag.attribution reports: the riskiest sentence's."""
    if not len(f.sentences):
        return 0.0
    return float(np.max(detector.predict(f.sentences.astype(np.float64))))


def scores(detector: Detector, feats: Sequence[AnswerFeatures]) -> dict[str, np.ndarray]:
    """Each method's score per answer (higher = more likely hallucinated)."""
    return {
        "detector": np.array([answer_risk(detector, f) for f in feats]),
        "baseline": np.array([1 - f.ratio.mean() for f in feats]),
        "token_mean": np.array([1 - float(f.token_ratio.mean()) for f in feats]),
        "length": np.array([f.n_tokens for f in feats], dtype=np.float64),
    }


@dataclass
class DetectReport:
    """`rag eval detect` output."""

    n: int
    n_hallucinated: int
    auroc: float  # the shipped detector's answer risk
    f1: float  # at the shipped threshold
    threshold: float
    length_auroc: float  # answer length in tokens alone (longer = hallucinated)
    overlap_auroc: float  # no model: share of response words absent from context and question
    baseline_auroc: float  # untrained: 1 - mean pooled lookback ratio
    token_mean_auroc: float  # untrained: 1 - mean of per-token ratios (no pooling)
    precision: float
    recall: float
    detector: str
    generator: str
    # 95% bootstrap intervals of detector AUROC minus length's (taken the way round that suits length
    # best) and minus the baseline's: above 0 = the detector is better on this data
    vs_length_ci: tuple[float, float] = (float("nan"), float("nan"))
    vs_baseline_ci: tuple[float, float] = (float("nan"), float("nan"))
    by_source: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def report(
    detector: Detector,
    examples: Sequence[DetectExample],
    feats: Sequence[AnswerFeatures],
    generator_name: str = "",
) -> DetectReport:
    y = np.array([ex.hallucinated for ex in examples], dtype=bool)
    s = scores(detector, feats)
    pred = s["detector"] >= detector.threshold
    tp = int((pred & y).sum())
    length = s["length"] if auroc(s["length"], y) >= 0.5 else -s["length"]
    by_source: dict[str, dict[str, float]] = {}
    sources = sorted({ex.source for ex in examples if ex.source})
    if len(sources) > 1:
        for name in sources:
            mask = np.array([ex.source == name for ex in examples])
            by_source[name] = {
                "n": int(mask.sum()),
                **{f"{k}_auroc": auroc(v[mask], y[mask]) for k, v in s.items()},
                "f1": f1_at(s["detector"][mask], y[mask], detector.threshold),
            }
    return DetectReport(
        n=len(examples),
        n_hallucinated=int(y.sum()),
        auroc=auroc(s["detector"], y),
        f1=f1_at(s["detector"], y, detector.threshold),
        threshold=detector.threshold,
        length_auroc=auroc(s["length"], y),
        baseline_auroc=auroc(s["baseline"], y),
        token_mean_auroc=auroc(s["token_mean"], y),
        overlap_auroc=auroc([unsupported_words(ex) for ex in examples], y),
        precision=tp / int(pred.sum()) if pred.any() else 0.0,
        recall=tp / int(y.sum()) if y.any() else 0.0,
        detector=detector.method,
        generator=generator_name,
        vs_length_ci=auroc_gap_ci(s["detector"], length, y),
        vs_baseline_ci=auroc_gap_ci(s["detector"], s["baseline"], y),
        by_source=by_source,
    )


def evaluate_file(
    path: Path,
    settings: Any,
    detector_path: Path | None = None,
    split: str | None = None,
    use_cache: bool = True,
    progress: ProgressFn | None = _stderr,
) -> DetectReport:
    """`rag eval detect FILE.jsonl`: teacher-force every line and score the shipped detector on it."""
    from rag.detect import Detector
    from rag.evaluation.detect_data import read_examples
    from rag.generate import Generator

    t0 = time.perf_counter()
    examples = read_examples(path, split)
    if not examples:
        raise ValueError(f"{path}: no lines" + (f" in split {split!r}" if split else ""))
    detector = Detector.load(detector_path)
    generator = Generator.load(settings)
    if not detector.fits(generator.n_layers, generator.n_heads):
        detector = Detector.baseline()
    store = FeatureStore(cache_path(settings.home_dir, generator.name) if use_cache else None)
    feats = extract(generator, examples, store, progress)
    result = report(detector, examples, feats, generator.name)
    result.seconds = time.perf_counter() - t0
    return result


def format_report(r: DetectReport) -> str:
    lines = [
        f"n {r.n} ({r.n_hallucinated} hallucinated), generator {r.generator}",
        f"detector       AUROC {r.auroc:.3f}   F1 {r.f1:.3f} at threshold {r.threshold:.3f} "
        f"(precision {r.precision:.3f}, recall {r.recall:.3f})",
        f"length alone   AUROC {r.length_auroc:.3f}   (answer tokens; "
        f"{max(r.length_auroc, 1 - r.length_auroc):.3f} either way round)",
        f"baseline       AUROC {r.baseline_auroc:.3f}   (untrained: 1 - pooled lookback ratio)",
        f"token mean     AUROC {r.token_mean_auroc:.3f}   (untrained: 1 - mean of per-token ratios)",
        f"word overlap   AUROC {r.overlap_auroc:.3f}   (no model: response words missing from the context)",
    ]
    for name, m in r.by_source.items():
        lines.append(
            f"  {name:<18} n {int(m['n']):>5}  detector {m['detector_auroc']:.3f}  "
            f"length {m['length_auroc']:.3f}  baseline {m['baseline_auroc']:.3f}  F1 {m['f1']:.3f}"
        )
    lines.append(
        f"detector - length AUROC, 95% CI [{r.vs_length_ci[0]:+.3f}, {r.vs_length_ci[1]:+.3f}]; "
        f"detector - baseline [{r.vs_baseline_ci[0]:+.3f}, {r.vs_baseline_ci[1]:+.3f}]"
    )
    lines.append(f"detector: {r.detector}   ({r.seconds:.0f} s)")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# training

# Sets on which answer length says (almost) nothing.
LENGTH_NEUTRAL = ("halueval-matched", "halueval-swap", "squad-swap", "squad-continue")
# sets whose label belongs to the answer's last sentence (the others label the whole answer)
LAST_SENTENCE_SETS = frozenset({"squad-continue"})
TRAIN_MIXES: dict[str, tuple[str, ...]] = {
    "all": ("halueval", "halueval-matched", "halueval-swap", "squad-swap", "squad-continue"),
    "length-neutral": LENGTH_NEUTRAL,
    "halueval": ("halueval",),
}
C_GRID = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)


@dataclass
class TrainReport:
    """What `rag eval train-detector` chose and how it did on the held-out test split."""

    mix: str
    c: float
    threshold: float
    n_train: int
    n_val: int
    val_auroc: dict[str, float]  # per set, the chosen detector
    candidates: list[dict[str, Any]]  # every (mix, c) tried, with its validation AUROCs
    test: dict[str, DetectReport]  # per set: held out, never used to fit or to pick anything
    path: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["test"] = {k: v.to_dict() for k, v in self.test.items()}
        return d


def _split(
    examples: Sequence[DetectExample],
    feats: Sequence[AnswerFeatures],
    split: str,
) -> tuple[list[DetectExample], list[AnswerFeatures]]:
    keep = [i for i, ex in enumerate(examples) if ex.split == split]
    return [examples[i] for i in keep], [feats[i] for i in keep]


def _union(
    sets: dict[str, list[DetectExample]],
    feats: dict[str, list[AnswerFeatures]],
    names: Sequence[str],
    split: str,
) -> tuple[list[DetectExample], list[AnswerFeatures]]:
    """Lines of the named sets in a split, each (question, context, response) once."""
    seen: set[tuple[str, str, str]] = set()
    out_ex, out_f = [], []
    for name in names:
        for ex, f in zip(*_split(sets[name], feats[name], split), strict=True):
            key = (ex.question, ex.context, ex.response)
            if key not in seen:
                seen.add(key)
                out_ex.append(ex)
                out_f.append(f)
    return out_ex, out_f


def _xy(examples: Sequence[DetectExample], feats: Sequence[AnswerFeatures]) -> tuple[np.ndarray, np.ndarray]:
    rows = [
        f.sentences[-1] if ex.source in LAST_SENTENCE_SETS and len(f.sentences) else f.ratio
        for ex, f in zip(examples, feats, strict=True)
    ]
    x = np.stack(rows).astype(np.float64)
    return x, np.array([ex.hallucinated for ex in examples], dtype=np.int64)


def train_detector(
    sets: dict[str, list[DetectExample]],
    feats: dict[str, list[AnswerFeatures]],
    *,
    n_layers: int,
    n_heads: int,
    generator_name: str,
    trained_on: str,
    mixes: dict[str, tuple[str, ...]] | None = None,
    c_grid: Sequence[float] = C_GRID,
    progress: ProgressFn | None = _stderr,
) -> tuple[Detector, TrainReport]:
    """Fit on train (whole-answer pooled ratios), pick mix and C by the mean validation AUROC over
    all sets, the threshold by F1 on validation, and report on test.

    All sets count in the choice: each probes another failure. Trained on the swap sets alone, a
    detector ranks raw HaluEval answers worse than chance (their hallucinations are restated
    questions, not foreign entities); trained on raw HaluEval alone it could lean on length, which
    the length-matched and swap sets give away."""
    mixes = mixes or TRAIN_MIXES
    val_names = list(sets)
    candidates: list[dict[str, Any]] = []
    best: tuple[float, str, float, Detector] | None = None
    for mix, names in mixes.items():
        names = tuple(n for n in names if n in sets)
        if not names:
            continue
        x, y = _xy(*_union(sets, feats, names, "train"))
        for c in c_grid:
            det = Detector.fit(x, y, n_layers=n_layers, n_heads=n_heads, c=c, threshold=0.5)
            val = {}
            for name in sets:
                ex, f = _split(sets[name], feats[name], "val")
                val[name] = auroc([answer_risk(det, a) for a in f], [e.hallucinated for e in ex])
            score = float(np.mean([val[n] for n in val_names]))
            candidates.append({"mix": mix, "c": c, "n_train": len(y), "val_auroc": val, "score": score})
            if progress:
                progress(
                    f"  {mix:<15} C={c:<6} n_train {len(y):>5}  val "
                    + "  ".join(f"{k} {v:.3f}" for k, v in val.items())
                )
            if best is None or score > best[0]:
                best = (score, mix, c, det)
    if best is None:
        raise ValueError("no training data")
    _, mix, c, det = best
    val_ex, val_f = _union(sets, feats, list(sets), "val")
    risk = np.array([answer_risk(det, f) for f in val_f])
    det.threshold = best_f1_threshold(risk, np.array([e.hallucinated for e in val_ex], dtype=np.int64))
    n_train = next(x["n_train"] for x in candidates if x["mix"] == mix and x["c"] == c)
    val_auroc = next(x["val_auroc"] for x in candidates if x["mix"] == mix and x["c"] == c)
    test = {}
    for name in sets:
        ex, f = _split(sets[name], feats[name], "test")
        if ex:
            test[name] = report(det, ex, f, generator_name)
    det.meta = {
        "generator": generator_name,
        "trained_on": trained_on,
        "train_sets": list(mixes[mix]),
        "features": "pooled lookback ratio per layer and head (rag.detect.features) of the whole answer, "
        "or of the last sentence where the label is that sentence's (squad-continue)",
        "c": c,
        "n_train": n_train,
        "n_val": len(val_ex),
        "threshold_chosen_on": "validation split, best F1 of the answer risk (riskiest sentence)",
        "auroc": {k: round(v.auroc, 4) for k, v in test.items()},
        "auroc_split": "test (held out by question / paragraph; never used to fit or choose)",
        "length_auroc": {k: round(v.length_auroc, 4) for k, v in test.items()},
        "baseline_auroc": {k: round(v.baseline_auroc, 4) for k, v in test.items()},
        "overlap_auroc": {k: round(v.overlap_auroc, 4) for k, v in test.items()},
        "detector_minus_length_ci95": {k: [round(x, 4) for x in v.vs_length_ci] for k, v in test.items()},
        "n_test": {k: v.n for k, v in test.items()},
        "f1": {k: round(v.f1, 4) for k, v in test.items()},
        "command": "rag eval train-detector",
    }
    return det, TrainReport(
        mix=mix,
        c=c,
        threshold=det.threshold,
        n_train=n_train,
        n_val=len(val_ex),
        val_auroc=val_auroc,
        candidates=candidates,
        test=test,
    )


def train_from_data(
    data_dir: Path,
    settings: Any,
    out: Path | None = None,
    squad_n: int = 600,
    write_data: Path | None = None,
    progress: ProgressFn | None = _stderr,
) -> tuple[Detector, TrainReport]:
    """`rag eval train-detector`: build the sets from `data_dir` (../shared/data), teacher-force them
    (cached), train, and save the detector to `out` (default: the shipped file)."""
    from rag.detect import DEFAULT_PATH
    from rag.evaluation.detect_data import build_all, write_examples
    from rag.generate import Generator

    sets = build_all(data_dir, squad_n=squad_n)
    if write_data is not None:
        for name, examples in sets.items():
            write_examples(write_data / f"{name}.jsonl", examples)
    generator = Generator.load(settings)
    store = FeatureStore(cache_path(settings.home_dir, generator.name))
    everything = [ex for examples in sets.values() for ex in examples]
    extract(generator, everything, store, progress)
    feats = {
        name: [store.items[store.key(generator.name, ex)] for ex in examples]
        for name, examples in sets.items()
    }
    trained_on = (
        f"HaluEval QA (both variants: raw, length-matched, answer-swap) and SQuAD-2 dev answer-swap and "
        f"sentence-continue ({squad_n} questions each) from {data_dir.parent.name}/{data_dir.name}, "
        f"teacher-forced through {generator.name} with the context as one source; "
        "splits by question/paragraph hash"
    )
    det, result = train_detector(
        sets,
        feats,
        n_layers=generator.n_layers,
        n_heads=generator.n_heads,
        generator_name=generator.name,
        trained_on=trained_on,
        progress=progress,
    )
    path = out or DEFAULT_PATH
    det.save(path)
    result.path = str(path)
    return det, result


def format_train(r: TrainReport) -> str:
    lines = [
        f"chose train mix {r.mix!r}, C={r.c}, threshold {r.threshold:.3f} (n_train {r.n_train}, "
        f"n_val {r.n_val}); saved {r.path}",
        "held-out test split:",
    ]
    for name, t in r.test.items():
        lines.append(
            f"  {name:<17} n {t.n:>4}  detector AUROC {t.auroc:.3f}  F1 {t.f1:.3f}  "
            f"length {t.length_auroc:.3f}  baseline {t.baseline_auroc:.3f}  token-mean "
            f"{t.token_mean_auroc:.3f}  (detector - length: [{t.vs_length_ci[0]:+.3f}, "
            f"{t.vs_length_ci[1]:+.3f}])"
        )
    return "\n".join(lines)
