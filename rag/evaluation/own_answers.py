"""The generator's own answers to SQuAD questions, kept for scoring and training: each question's
outcome (`QuestionResult`), its judge-free label (`own_label`) and the draft's pooled features
(rag.attribute.detector.pool, whole answer and per sentence). `rag eval squad --save DIR` writes them, `rag
eval train-detector --own DIR` trains on them without running the generator again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import TypeAdapter

from rag.attribute.detector import Detector, Pooled
from rag.evaluation.metrics import contains_answer, max_f1
from rag.inputs import read_jsonl
from rag.text import strip_citations


def own_label(answerable: bool, answer: str, golds: Sequence[str], declined: bool) -> int | None:
    """Whether a draft is grounded (0) or not (1), judged against SQuAD's gold, no model involved.

    - a decline ("I don't know") makes no claim: no label;
    - answerable: a gold answer contained -> 0; no word in common with any (token-F1 0) -> 1; partial
      overlap is ambiguous -> no label;
    - unanswerable: any specific claim instead of declining -> 1."""
    if declined:
        return None
    if not answerable:
        return 1
    text = strip_citations(answer)
    if contains_answer(text, golds):
        return 0
    return 1 if max_f1(text, golds) == 0.0 else None

@dataclass
class QuestionResult:
    id: str
    title: str
    question: str
    answerable: bool
    answer: str  # the draft as generated (also when abstention would hold it back)
    no_sources: bool  # nothing relevant retrieved: abstained before generating
    declined: bool  # the model itself said the sources do not hold the answer, or only named one
    retrieved_gold: bool  # gold paragraph among the top k
    f1: float
    contains: bool
    label: int | None  # own_label: 0 grounded, 1 not, None unlabelled
    risk: float | None  # the draft's answer risk (None when nothing was generated)
    seconds: float
    # answerable drafts only: the top evidence span of the sentence naming the gold answer covers a
    # gold answer's offset in its paragraph (None: not a correct draft, or no evidence)
    evidence_hit: bool | None = None
    # answerable drafts only: the quotes that would replace the draft if held back contain the gold
    quotes_hit: bool | None = None


_RESULT: TypeAdapter[QuestionResult] = TypeAdapter(QuestionResult)


@dataclass
class OwnAnswers:
    """Drafts with their pooled features, aligned with `results` (None where nothing was generated)."""

    results: list[QuestionResult]
    answers: list[Pooled | None]  # the whole answer
    sentences: list[list[Pooled]]  # per sentence, as rag.attribute.attribution scores them
    generator: str = ""
    shape: tuple[int, int] = (0, 0)  # the generator's (layers, heads)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        meta = {"generator": self.generator, "shape": list(self.shape)}
        (folder / "meta.json").write_text(json.dumps(meta) + "\n")
        with (folder / "results.jsonl").open("w", encoding="utf-8") as f:
            for r in self.results:
                f.write(json.dumps(asdict(r)) + "\n")
        rows = [(i, p) for i, p in enumerate(self.answers) if p is not None]
        sent = [(i, p) for i, ps in enumerate(self.sentences) for p in ps]
        arrays = {**_stack("answer", rows), **_stack("sentence", sent)}
        np.savez(folder / "features.npz", **arrays)  # type: ignore[arg-type]

    @classmethod
    def load(cls, folder: Path) -> OwnAnswers:
        results = list(read_jsonl(folder / "results.jsonl", _RESULT))
        answers: list[Pooled | None] = [None] * len(results)
        sentences: list[list[Pooled]] = [[] for _ in results]
        with np.load(folder / "features.npz") as z:
            for i, p in _unstack(z, "answer"):
                answers[i] = p
            for i, p in _unstack(z, "sentence"):
                sentences[i].append(p)
        meta = json.loads((folder / "meta.json").read_text())
        return cls(results, answers, sentences, meta["generator"], (meta["shape"][0], meta["shape"][1]))

    def risks(self, detector: Detector) -> list[float | None]:
        """Each draft's answer risk under `detector` (None where nothing was generated)."""
        return [self.risk(i, detector) if a is not None else None for i, a in enumerate(self.answers)]

    def risk(self, i: int, detector: Detector) -> float:
        """Draft i's answer risk: its riskiest sentence's, as rag.attribute.attribution."""
        return max((detector.risk(p) for p in self.sentences[i]), default=0.0)


_POOLED_FIELDS = ("lookback", "density", "logprob_min", "logprob_mean", "n_tokens", "decline")


def _stack(prefix: str, rows: list[tuple[int, Pooled]]) -> dict[str, np.ndarray]:
    out = {f"{prefix}_index": np.array([i for i, _ in rows], dtype=np.int64)}
    for name in _POOLED_FIELDS:
        out[f"{prefix}_{name}"] = np.array([getattr(p, name) for _, p in rows])
    return out


def _unstack(z: Any, prefix: str) -> list[tuple[int, Pooled]]:
    index = z[f"{prefix}_index"]
    # drafts saved before a feature existed read it as 0.0; train-detector leaves such a constant out
    cols = {name: z[f"{prefix}_{name}"] if f"{prefix}_{name}" in z else np.zeros(len(index))
            for name in _POOLED_FIELDS}
    return [
        (int(i), Pooled(cols["lookback"][j], cols["density"][j], float(cols["logprob_min"][j]),
                        float(cols["logprob_mean"][j]), int(cols["n_tokens"][j]), float(cols["decline"][j])))
        for j, i in enumerate(index)
    ]
