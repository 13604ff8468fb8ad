"""int8 decoder: dynamic int8 linear layers (``RAG_QUANTIZE=int8``) against fp32, speed and quality.

For each model (the default generator and smollm2-135m) the same SQuAD-v2 dev questions are answered
greedily by the fp32 and the int8 model, each with its gold paragraph as the one source (no
retrieval, so the generator is the only thing that differs). Reported per model:

- decode tok/s (tokens after the first over the time after the first), pooled over the questions,
  and the int8 / fp32 ratio (goal >= 2.5);
- answer agreement: the share of questions whose greedy text is the same;
- token-F1 against the gold answers on the answerable questions (goal: within one point of fp32);
- the shipped detector's AUROC on each model's own answers, labelled against SQuAD's gold as
  ``rag eval squad`` does (few labels at this size: a sign, not a measurement).

``python -m bench quantize`` (or ``python -m bench.quantize --n 20 --models smollm2-135m``) prints a
table and writes bench/results/quantize.json. Run it with OMP_NUM_THREADS set: the threads are
part of the result.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import torch

from bench.common import SHARED_DATA, report
from rag.answer.pipeline import declined
from rag.attribute.detector import Detector, pool
from rag.config import DEFAULT_GENERATOR, Settings
from rag.evaluation.metrics import auroc, max_f1
from rag.evaluation.own_answers import own_label
from rag.evaluation.squad import sample_questions
from rag.generate.generator import Generator
from rag.text import strip_citations
from rag.types import Source

MODELS = [DEFAULT_GENERATOR, "smollm2-135m"]
TARGET_SPEEDUP = 2.5
TARGET_F1_POINTS = 1.0  # int8 token-F1 no more than one point (0.01) under fp32
SQUAD = SHARED_DATA / "squad_v2_dev" / "dev_flat.jsonl"


def _answer_all(generator: Generator, rows: list[dict[str, Any]], max_new_tokens: int) -> dict[str, Any]:
    detector = Detector.for_generator(generator.name)
    texts: list[str] = []
    f1s: list[float] = []
    risks: list[float] = []
    labels: list[int] = []
    decode_tokens, decode_s = 0, 0.0
    generator.generate("Warm up?", [Source.from_context("Warm up.")], max_new_tokens=4)
    for row in rows:
        gen = generator.generate(row["question"], [Source.from_context(row["context"])],
                                 max_new_tokens=max_new_tokens)
        texts.append(gen.text)
        decode_tokens += max(len(gen.token_ids) - 1, 0)
        decode_s += gen.decode_ms / 1000
        golds = [g for g in row["answers"]["text"] if g.strip()]
        answerable = not row["is_impossible"] and bool(golds)
        if answerable:
            f1s.append(max_f1(strip_citations(gen.text), golds))
        label = own_label(answerable, gen.text, golds, declined(gen.text))
        if label is not None and gen.token_ids:
            labels.append(label)
            risks.append(detector.risk(pool(gen)))
    both = len(set(labels)) == 2
    return {
        "texts": texts,
        "decode_tok_s": decode_tokens / decode_s if decode_s else float("nan"),
        "decode_tokens": decode_tokens,
        "f1": sum(f1s) / len(f1s) if f1s else float("nan"),
        "answerable": len(f1s),
        "labelled": len(labels),
        "hallucinated": sum(labels),
        "auroc": auroc(risks, labels) if both else None,
    }


def measure_model(model: str, rows: list[dict[str, Any]], max_new_tokens: int) -> dict[str, Any]:
    base = Settings(generator=model)  # converted models from RAG_HOME/models (or RAG_MODELS_CACHE)
    runs: dict[str, dict[str, Any]] = {}
    for mode in ("none", "int8"):
        generator = Generator.load(base.model_copy(update={"quantize": mode}))
        runs[mode] = _answer_all(generator, rows, max_new_tokens)
        del generator
    fp32, int8 = runs["none"], runs["int8"]
    same = sum(a == b for a, b in zip(fp32["texts"], int8["texts"], strict=True))
    return {
        "model": model,
        "fp32": fp32,
        "int8": int8,
        "speedup": int8["decode_tok_s"] / fp32["decode_tok_s"],
        "same_text_share": same / len(rows),
        "f1_points_lost": 100 * (fp32["f1"] - int8["f1"]),
    }


def measure(models: list[str], n: int = 24, max_new_tokens: int = 48) -> dict[str, Any]:
    rows = sample_questions(SQUAD, n, seed=0)
    results = [measure_model(m, rows, max_new_tokens) for m in models]
    return {
        "questions": len(rows),
        "max_new_tokens": max_new_tokens,
        "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "models": results,
        "targets": {"speedup": TARGET_SPEEDUP, "f1_points_lost": TARGET_F1_POINTS},
        "meets_targets": all(
            r["speedup"] >= TARGET_SPEEDUP and r["f1_points_lost"] <= TARGET_F1_POINTS for r in results
        ),
    }


def run(models: list[str] | None = None, n: int = 24, max_new_tokens: int = 48) -> dict[str, Any]:
    """Measure, print the table, write bench/results/quantize.json."""
    if not SQUAD.exists():
        print(f"bench quantize: {SQUAD} not found (set RAG_SHARED_DATA); skipped")
        return {}
    r = measure(models or MODELS, n, max_new_tokens)
    rows: list[tuple[str, Any, str]] = [
        ("questions / max new tokens / torch threads", f"{r['questions']} / {r['max_new_tokens']} / "
         f"{r['threads']}", ""),
    ]
    for m in r["models"]:
        name, fp32, int8 = m["model"], m["fp32"], m["int8"]

        def shown(x: float | None) -> str:
            return "n/a" if x is None else f"{x:.3f}"

        rows += [
            (f"{name}: decode tok/s fp32 / int8", f"{fp32['decode_tok_s']:.2f} / {int8['decode_tok_s']:.2f}",
             ""),
            (f"{name}: int8 / fp32 decode", m["speedup"], f">= {TARGET_SPEEDUP}"),
            (f"{name}: same greedy text", m["same_text_share"], "report"),
            (f"{name}: token-F1 fp32 / int8 ({fp32['answerable']} answerable)",
             f"{fp32['f1']:.3f} / {int8['f1']:.3f}", ""),
            (f"{name}: F1 points lost", m["f1_points_lost"], f"<= {TARGET_F1_POINTS}"),
            (f"{name}: detector AUROC fp32 / int8 (labels {fp32['labelled']}/{int8['labelled']})",
             f"{shown(fp32['auroc'])} / {shown(int8['auroc'])}", "report"),
        ]
    report("quantize", rows, r)
    return r


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=24, help="SQuAD questions")
    parser.add_argument("--tokens", type=int, default=48, help="max new tokens per answer")
    parser.add_argument("--models", nargs="+", default=MODELS)
    args = parser.parse_args(argv)
    run(args.models, args.n, args.tokens)


if __name__ == "__main__":
    main()
