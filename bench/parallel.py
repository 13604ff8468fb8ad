"""Parallel prefill (per-chunk KV reuse, rag/generate/kvcache.py) against the full prefill, on SQuAD-2 dev.

Each question gets k = 4 sources: its own paragraph and three others of the same article, in a
seeded random order. Per question and mode: the first-token latency (full; parallel with a cold
chunk cache; parallel again with the cache warm; parallel with a fresh cache, memory empty and the
units on its disk tier, as a restarted process with RAG_KV_DISK_MB finds them), the answer, its
token-F1 against the gold answers and the shipped detector's risk. Quality is of the same greedy
answers a user would get; the AUROC is over the judge-free own-answer labels
(rag/evaluation/own_answers.py `own_label`), beside answer length.
Questions come from the validation articles (never trained on).

`python -m bench parallel` (or `python -m bench.parallel --n 40`) prints a table and writes
bench/results/parallel.json. Goals (issue 11): warm first token >= 3x faster than full, F1 >= 95% of
full, AUROC within 0.02.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import tempfile
import zlib
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from bench.common import SHARED_DATA, report
from rag.answer.pipeline import declined
from rag.attribute.attribution import attribute
from rag.attribute.detector import Detector
from rag.config import Settings
from rag.evaluation.metrics import auroc, max_f1
from rag.evaluation.own_answers import own_label
from rag.evaluation.questions import squad_rows
from rag.evaluation.squad import sample_questions
from rag.generate.generator import Generator
from rag.generate.kvcache import ChunkKVCache, KVDisk
from rag.text import strip_citations
from rag.types import Source

K = 4
SQUAD = SHARED_DATA / "squad_v2_dev" / "dev_flat.jsonl"


def paragraphs_by_article() -> dict[str, list[str]]:
    """Every SQuAD dev paragraph, grouped by article title: where ``sources_for`` draws distractors."""
    paragraphs: dict[str, list[str]] = defaultdict(list)
    for r in squad_rows(SQUAD):
        if r["context"] not in paragraphs[r["title"]]:
            paragraphs[r["title"]].append(r["context"])
    return paragraphs


def sources_for(row: dict[str, Any], paragraphs: dict[str, list[str]], seed: int) -> list[Source]:
    """The question's paragraph and K - 1 others of its article, shuffled."""
    rng = random.Random(f"{seed}:{row['id']}")
    others = [p for p in paragraphs[row["title"]] if p != row["context"]]
    chosen = [row["context"], *rng.sample(others, min(K - 1, len(others)))]
    rng.shuffle(chosen)
    title = row["title"].replace("_", " ")
    return [Source(rank=i + 1, chunk_id=zlib.crc32(text.encode()) >> 1, document_id=i + 1,
                   path=f"{row['title']}.txt", title=title, text=text, char_start=0, char_end=len(text),
                   score=1.0)
            for i, text in enumerate(chosen)]


def measure(settings: Settings | None = None, *, n: int = 40, seed: int = 0) -> dict[str, Any]:
    settings = settings or Settings()
    full = Generator.load(settings.model_copy(update={"prefill": "full", "max_new_tokens": 48}))
    parallel_settings = settings.model_copy(update={"prefill": "parallel", "max_new_tokens": 48})
    parallel = Generator(full.model, full.tokenizer, parallel_settings, name=full.name)
    detector = Detector.for_generator(full.name)
    paragraphs = paragraphs_by_article()
    rows = sample_questions(SQUAD, n, seed, split="val")

    per: dict[str, dict[str, list[float]]] = {m: defaultdict(list) for m in ("full", "parallel")}
    labels: dict[str, list[tuple[int, float, float, int]]] = {"full": [], "parallel": []}
    baseline = Detector.baseline()
    warm_ms: list[float] = []
    disk_ms: list[float] = []
    disk_folder = Path(tempfile.mkdtemp(prefix="sightline-kv-"))
    on_disk = Generator(full.model, full.tokenizer, parallel_settings, name=full.name)

    def fresh_cache() -> ChunkKVCache:
        """Memory empty, the disk tier's files as the last cache left them: a restarted process."""
        return ChunkKVCache(parallel.chunk_kv.max_bytes, KVDisk(disk_folder, 4 << 30))

    try:
        for row in rows:
            sources = sources_for(row, paragraphs, seed)
            golds = [] if row["is_impossible"] else [a for a in row["answers"]["text"] if a]
            for mode, generator in (("full", full), ("parallel", parallel)):
                gen = generator.generate(row["question"], sources)
                risk = attribute(gen, sources, detector).hallucination.risk
                untrained = attribute(gen, sources, baseline).hallucination.risk  # 1 - lookback
                per[mode]["first_ms"].append(gen.prefill_ms)
                if golds:
                    per[mode]["f1"].append(max_f1(strip_citations(gen.text), golds))
                label = own_label(bool(golds), gen.text, golds, declined(gen.text))
                if label is not None:
                    labels[mode].append((label, risk, untrained, len(gen.token_ids)))
            warm_ms.append(parallel.generate(row["question"], sources, max_new_tokens=1).prefill_ms)
            on_disk.chunk_kv = fresh_cache()
            on_disk.generate(row["question"], sources, max_new_tokens=1)  # writes the units' files
            on_disk.chunk_kv = fresh_cache()
            disk_ms.append(on_disk.generate(row["question"], sources, max_new_tokens=1).prefill_ms)
            assert on_disk.chunk_kv.misses == 0, "every unit came from disk"
    finally:
        shutil.rmtree(disk_folder)  # units of every question: up to gigabytes

    def scores(mode: str) -> dict[str, float]:
        rows_ = labels[mode]
        ys = [y for y, *_ in rows_]
        both = 0 < sum(ys) < len(ys)
        return {
            "f1": statistics.mean(per[mode]["f1"]),
            "first_token_ms": statistics.median(per[mode]["first_ms"]),
            "labelled": len(ys),
            "wrong": sum(ys),
            "auroc": auroc([r[1] for r in rows_], ys) if both else float("nan"),
            "auroc_lookback": auroc([r[2] for r in rows_], ys) if both else float("nan"),
            "auroc_length": auroc([r[3] for r in rows_], ys) if both else float("nan"),
        }

    f, p = scores("full"), scores("parallel")
    warm = statistics.median(warm_ms)
    return {
        "model": full.name,
        "threads": torch.get_num_threads(),
        "questions": len(rows),
        "k": K,
        "full": f,
        "parallel": p,
        "first_token_ms_parallel_warm": warm,
        "first_token_ms_parallel_disk": statistics.median(disk_ms),
        "speedup_warm": f["first_token_ms"] / warm,
        "speedup_cold": f["first_token_ms"] / p["first_token_ms"],
        "f1_retained": p["f1"] / f["f1"] if f["f1"] else float("nan"),
        "auroc_gap": p["auroc"] - f["auroc"],
        "kv_cache_mb": parallel.chunk_kv.nbytes / 2**20,
    }


def run(settings: Settings | None = None, *, n: int = 40, seed: int = 0) -> dict[str, Any]:
    r = measure(settings, n=n, seed=seed)
    f, p = r["full"], r["parallel"]
    report(
        "parallel",
        [
            ("model (threads) / questions / k",
             f"{r['model']} ({r['threads']}) / {r['questions']} / {r['k']}", ""),
            ("first token ms, full prefill", f["first_token_ms"], ""),
            ("first token ms, parallel cold", p["first_token_ms"], ""),
            ("first token ms, parallel warm", r["first_token_ms_parallel_warm"], ""),
            ("first token ms, parallel warm disk (memory empty)", r["first_token_ms_parallel_disk"], ""),
            ("speed-up warm (full / parallel warm)", r["speedup_warm"], ">= 3"),
            ("token-F1 full / parallel", f"{f['f1']:.3f} / {p['f1']:.3f}", ""),
            ("F1 retained (parallel / full)", r["f1_retained"], ">= 0.95"),
            ("risk AUROC full (n, wrong)", f"{f['auroc']:.3f} ({f['labelled']}, {f['wrong']})", ""),
            ("risk AUROC parallel (n, wrong)", f"{p['auroc']:.3f} ({p['labelled']}, {p['wrong']})", ""),
            ("  baseline: answer length, full / parallel",
             f"{f['auroc_length']:.3f} / {p['auroc_length']:.3f}", ""),
            ("  baseline: 1 - lookback, full / parallel",
             f"{f['auroc_lookback']:.3f} / {p['auroc_lookback']:.3f}", ""),
            ("AUROC gap (parallel - full)", r["auroc_gap"], "within 0.02"),
            ("chunk KV cache held, MB", r["kv_cache_mb"], ""),
        ],
        r,
    )
    return r


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=40, help="questions")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    run(n=args.n, seed=args.seed)


if __name__ == "__main__":
    main()
