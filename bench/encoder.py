"""Encoder: the packaged MiniLM under torch fp32 against ONNX Runtime fp32 and dynamic int8.

Decides whether an ONNX embedder backend is worth having (issue 11 item 5: >= 1.8x chunks/s with
nDCG@10 within 0.01). The ONNX files are exported into a temporary folder by the library's exporter
(rag/embed/onnx_encoder.py, what RAG_EMBED_BACKEND=onnx and onnx-int8 run) from the same SentenceTransformer.

Texts: the first ``--docs`` SQuAD-v2 dev paragraphs; the same texts are a BEIR folder (paragraphs
as documents, their answerable questions as queries) scored by dense nDCG@10 with each encoder.
Needs ``pip install -e ".[onnx]"`` (onnxruntime, onnx: not installed by default); skipped without.
``python -m bench encoder`` prints the table and writes bench/results/encoder.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.common import SHARED_DATA, report
from rag.config import Settings
from rag.embed.onnx_encoder import OnnxEncoder, export, quantize
from rag.evaluation.beir import build_beir_from_squad, doc_text, evaluate_search, load_beir
from rag.evaluation.modes import InMemoryRetriever
from rag.index.lexical import LexicalIndex
from rag.resources import resolve_model_path

SQUAD = SHARED_DATA / "squad_v2_dev" / "dev_flat.jsonl"
TARGET_SPEEDUP = 1.8
TARGET_NDCG_DROP = 0.01
Encode = Callable[[list[str]], np.ndarray]


def _squad_subset(out: Path, docs: int) -> Path:
    """The SQuAD lines of the first ``docs`` paragraphs (all their questions), as a new file."""
    seen: set[tuple[str, int]] = set()
    path = out / "squad.jsonl"
    with SQUAD.open() as src, path.open("w") as dst:
        for line in src:
            row = json.loads(line)
            key = (row["title"], row["paragraph_index"])
            if key not in seen and len(seen) >= docs:
                break
            seen.add(key)
            dst.write(line)
    return path


def measure(docs: int = 300, batch_size: int = 64) -> dict[str, Any]:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(resolve_model_path(Settings().embedder), device="cpu")

    def torch_encode(texts: list[str]) -> np.ndarray:
        return np.asarray(model.encode(texts, batch_size=batch_size, normalize_embeddings=True))

    with tempfile.TemporaryDirectory(prefix="sightline-encoder-") as tmp:
        folder = Path(tmp)
        build_beir_from_squad(_squad_subset(folder, docs), folder / "beir")
        dataset = load_beir(folder / "beir")
        t0 = time.perf_counter()
        fp32, int8 = folder / "model.onnx", folder / "model_int8.onnx"
        export(model, fp32)
        quantize(fp32, int8)
        export_s = time.perf_counter() - t0
        encoders: dict[str, Encode] = {
            "torch": torch_encode,
            "onnx": partial(OnnxEncoder(model, fp32).encode, batch_size=batch_size),
            "onnx-int8": partial(OnnxEncoder(model, int8).encode, batch_size=batch_size),
        }
        doc_ids = list(dataset.corpus)
        texts = [doc_text(dataset.corpus[d]) for d in doc_ids]
        lexical = LexicalIndex.from_pairs(enumerate(texts))  # unused: dense mode only
        results: dict[str, dict[str, float]] = {}
        reference = None
        for name, encode in encoders.items():
            encode(texts[:8])  # warm-up: thread pools, allocator
            start = time.perf_counter()
            vectors = encode(texts)
            seconds = time.perf_counter() - start
            reference = vectors if reference is None else reference
            retriever = InMemoryRetriever(doc_ids, vectors, lexical, encode)
            ids = dataset.eval_query_ids()
            retriever.prime_dense([dataset.queries[q] for q in ids])
            metrics = evaluate_search(dataset, partial(retriever.search, mode="dense", k=10))
            results[name] = {"chunks_s": len(texts) / seconds, "ndcg@10": metrics["ndcg@10"],
                             "min_cosine_vs_torch": float((vectors * reference).sum(1).min())}
    base = results["torch"]
    for r in results.values():
        r["speedup"] = r["chunks_s"] / base["chunks_s"]
        r["ndcg_drop"] = base["ndcg@10"] - r["ndcg@10"]
    return {
        "documents": len(texts), "queries": len(dataset.eval_query_ids()), "batch_size": batch_size,
        "threads": torch.get_num_threads(), "export_s": export_s, "encoders": results,
        "targets": {"speedup": TARGET_SPEEDUP, "ndcg_drop": TARGET_NDCG_DROP},
        "onnx_meets_targets": any(
            r["speedup"] >= TARGET_SPEEDUP and r["ndcg_drop"] <= TARGET_NDCG_DROP
            for n, r in results.items() if n != "torch"
        ),
    }


def run(docs: int = 300) -> dict[str, Any]:
    """Measure, print the table, write bench/results/encoder.json."""
    missing = [m for m in ("onnxruntime", "onnx") if importlib.util.find_spec(m) is None]
    if missing or not SQUAD.exists():
        print(f"bench encoder: skipped (needs {missing or SQUAD})")
        return {}
    r = measure(docs)
    rows: list[tuple[str, Any, str]] = [
        ("documents / queries / threads", f"{r['documents']} / {r['queries']} / {r['threads']}", ""),
    ]
    for name, e in r["encoders"].items():
        rows += [
            (f"{name}: chunks/s", e["chunks_s"], ""),
            (f"{name}: / torch fp32", e["speedup"], "" if name == "torch" else f">= {TARGET_SPEEDUP}"),
            (f"{name}: dense nDCG@10 (drop)", f"{e['ndcg@10']:.4f} ({e['ndcg_drop']:+.4f})",
             "" if name == "torch" else f"<= {TARGET_NDCG_DROP}"),
            (f"{name}: min cosine vs torch", e["min_cosine_vs_torch"], ""),
        ]
    report("encoder", rows, r)
    return r


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=300, help="SQuAD paragraphs encoded and searched")
    run(parser.parse_args(argv).docs)


if __name__ == "__main__":
    main()
