"""Guided decoding (rag/answer/guided.py, issue 10) against greedy decoding on the same SQuAD-2 questions.

Each question gets k = 4 sources, as `bench parallel` builds them (its paragraph and three others of
its article, shuffled), from the validation articles. Every question is answered both ways by the
default generator with the shipped detector, one after the other, and each answer goes through
attribution and the pipeline's abstention rule. Per mode:

- useful: answerable questions answered (not declined, not held back at the detector's abstention
  risk) with a gold answer contained;
- bad: drafts whose own-answer label (rag/evaluation/own_answers.py `own_label`) is 1, over the labelled;
- flagged: drafts at or above the detector's threshold; held back: at or above its abstention risk;
- seconds per question: decoding and attribution, wall clock.

`python -m bench guided` (or `python -m bench.guided --n 20 --candidates 3 --step 8`) prints a table
and writes bench/results/guided.json. Guided decoding stays optional unless it pays.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from bench.common import SHARED_DATA, report
from bench.parallel import paragraphs_by_article, sources_for
from rag.answer.guided import guided_generate
from rag.answer.pipeline import declined
from rag.attribute.attribution import attribute
from rag.attribute.detector import Detector
from rag.config import Settings
from rag.evaluation.metrics import contains_answer
from rag.evaluation.own_answers import own_label
from rag.evaluation.squad import sample_questions
from rag.generate.decoding import Generation
from rag.generate.generator import Generator
from rag.text import strip_citations

SQUAD = SHARED_DATA / "squad_v2_dev" / "dev_flat.jsonl"
MODES = ("greedy", "guided")


def measure(n: int = 20, candidates: int = 3, step_tokens: int = 8, seed: int = 0) -> dict[str, Any]:
    generator = Generator.load(Settings())
    detector = Detector.for_generator(generator.name)
    paragraphs = paragraphs_by_article()
    rows = sample_questions(SQUAD, n, seed, split="val")
    generator.generate("Warm up?", sources_for(rows[0], paragraphs, seed), max_new_tokens=2)

    def answer(mode: str, question: str, sources: Any) -> Generation:
        if mode == "greedy":
            return generator.generate(question, sources)
        return guided_generate(generator, detector, question, sources, candidates=candidates,
                               step_tokens=step_tokens)

    per: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    for row in rows:
        sources = sources_for(row, paragraphs, seed)
        golds = [] if row["is_impossible"] else [a for a in row["answers"]["text"] if a.strip()]
        for mode in MODES:
            t0 = time.perf_counter()
            gen = answer(mode, row["question"], sources)
            risk = attribute(gen, sources, detector).hallucination.risk
            seconds = time.perf_counter() - t0
            text = gen.text.strip()
            no = declined(text)
            held = risk >= detector.abstain_risk and not no
            contains = bool(golds) and contains_answer(strip_citations(text), golds)
            per[mode].append({
                "id": row["id"], "answer": text, "tokens": len(gen.token_ids), "risk": risk,
                "seconds": seconds, "answerable": bool(golds), "declined": no, "held": held,
                "flagged": risk >= detector.threshold,
                "useful": contains and not no and not held,
                "label": own_label(bool(golds), text, golds, no),
            })

    def summary(mode: str) -> dict[str, Any]:
        qs = per[mode]
        labelled = [q for q in qs if q["label"] is not None]
        return {
            "answerable": sum(q["answerable"] for q in qs),
            "useful": sum(q["useful"] for q in qs),
            "labelled": len(labelled),
            "bad": sum(q["label"] for q in labelled),
            "flagged": sum(q["flagged"] for q in qs),
            "held": sum(q["held"] for q in qs),
            "declined": sum(q["declined"] for q in qs),
            "seconds_per_question": sum(q["seconds"] for q in qs) / len(qs),
            "tokens_per_answer": sum(q["tokens"] for q in qs) / len(qs),
            "mean_risk": sum(q["risk"] for q in qs) / len(qs),
        }

    same = sum(a["answer"] == b["answer"] for a, b in zip(per["greedy"], per["guided"], strict=True))
    return {
        "model": generator.name,
        "detector": detector.method,
        "threshold": detector.threshold,
        "abstain_risk": detector.abstain_risk,
        "threads": torch.get_num_threads(),
        "questions": len(rows),
        "candidates": candidates,
        "step_tokens": step_tokens,
        "same_answer": same,
        **{mode: summary(mode) for mode in MODES},
        "per_question": per,
    }


def run(n: int = 20, candidates: int = 3, step_tokens: int = 8, seed: int = 0) -> dict[str, Any]:
    if not SQUAD.exists():
        print(f"bench guided: {SQUAD} not found (set RAG_SHARED_DATA); skipped")
        return {}
    r = measure(n, candidates, step_tokens, seed)
    g, d = r["greedy"], r["guided"]

    def pair(key: str, of: int | str) -> str:
        total_g, total_d = (g[of], d[of]) if isinstance(of, str) else (of, of)
        return (f"{g[key] / max(total_g, 1):.3f} ({g[key]}/{total_g}) / "
                f"{d[key] / max(total_d, 1):.3f} ({d[key]}/{total_d})")

    report(
        "guided",
        [
            ("model (threads) / questions", f"{r['model']} ({r['threads']}) / {r['questions']}", ""),
            ("candidates x step tokens", f"{r['candidates']} x {r['step_tokens']}", ""),
            ("useful, greedy / guided", pair("useful", "answerable"), "guided >= greedy"),
            ("bad (label 1), greedy / guided", pair("bad", "labelled"), "guided < greedy"),
            ("flagged, greedy / guided", pair("flagged", r["questions"]), ""),
            ("held back, greedy / guided", pair("held", r["questions"]), ""),
            ("declined, greedy / guided", pair("declined", r["questions"]), ""),
            ("mean risk, greedy / guided", f"{g['mean_risk']:.3f} / {d['mean_risk']:.3f}", ""),
            ("tokens an answer, greedy / guided",
             f"{g['tokens_per_answer']:.1f} / {d['tokens_per_answer']:.1f}", ""),
            ("seconds a question, greedy / guided",
             f"{g['seconds_per_question']:.2f} / {d['seconds_per_question']:.2f}", ""),
            ("time guided / greedy", d["seconds_per_question"] / g["seconds_per_question"], "report"),
            ("same answer both ways", f"{r['same_answer']}/{r['questions']}", ""),
        ],
        r,
    )
    return r


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20, help="questions")
    parser.add_argument("--candidates", type=int, default=3)
    parser.add_argument("--step", type=int, default=8, help="tokens per guided step")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    run(args.n, args.candidates, args.step, args.seed)


if __name__ == "__main__":
    main()
