"""Encoder: the packaged MiniLM under torch fp32 against ONNX Runtime fp32 and dynamic int8.

Decides whether an ONNX embedder backend is worth having (issue 11 item 5: >= 1.8x chunks/s with
nDCG@10 within 0.01). The ONNX files are exported here, into a temporary folder, from the same
SentenceTransformer (transformer + mean pooling + normalise in one graph, torch.onnx legacy
exporter), and int8 is onnxruntime's ``quantize_dynamic``. optimum (what sentence-transformers'
``backend="onnx"`` and ``export_dynamic_quantized_onnx_model`` use) is not usable here:
optimum-onnx 0.1.0 pins transformers < 4.58 and sightline needs >= 5.24.

Texts: the first ``--docs`` SQuAD-v2 dev paragraphs; the same texts are a BEIR folder (paragraphs
as documents, their answerable questions as queries) scored by dense nDCG@10 with each encoder.
Needs ``pip install -e ".[bench-onnx]"`` (onnxruntime, onnx: not runtime dependencies); skipped without.
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
from rag.evaluation.beir import build_beir_from_squad, doc_text, evaluate_search, load_beir
from rag.evaluation.modes import InMemoryRetriever
from rag.lexical import LexicalIndex
from rag.resources import resolve_model_path

SQUAD = SHARED_DATA / "squad_v2_dev" / "dev_flat.jsonl"
TARGET_SPEEDUP = 1.8
TARGET_NDCG_DROP = 0.01
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
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


def _export(model: Any, folder: Path) -> tuple[Path, Path]:
    """model.onnx (fp32) and model_int8.onnx (dynamic int8 weights) of the whole sentence model."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    class Whole(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.st = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    token_type_ids: torch.Tensor) -> torch.Tensor:
            features = {"input_ids": input_ids, "attention_mask": attention_mask,
                        "token_type_ids": token_type_ids, "modality": "text"}
            return self.st(features)["sentence_embedding"]

    sample = model.preprocess(["an example", "a slightly longer example sentence"])
    axes = {name: {0: "batch", 1: "tokens"} for name in INPUTS}
    fp32, int8 = folder / "model.onnx", folder / "model_int8.onnx"
    torch.onnx.export(Whole().eval(), tuple(sample[n] for n in INPUTS), str(fp32), dynamo=False,
                      opset_version=17, input_names=list(INPUTS), output_names=["sentence_embedding"],
                      dynamic_axes={**axes, "sentence_embedding": {0: "batch"}})
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
    return fp32, int8


def _onnx_encoder(model: Any, path: Path, batch_size: int) -> Encode:
    """Tokenised by the sentence model (same truncation), batches sorted by length like its encode."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = torch.get_num_threads(), 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def encode(texts: list[str]) -> np.ndarray:
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.zeros((len(texts), model.get_embedding_dimension()), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            idx = order[start : start + batch_size]
            feats = model.preprocess([texts[i] for i in idx])
            (vectors,) = session.run(None, {n: feats[n].numpy() for n in INPUTS})
            out[idx] = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        return out

    return encode


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
        fp32, int8 = _export(model, folder)
        export_s = time.perf_counter() - t0
        encoders = {"torch": torch_encode, "onnx": _onnx_encoder(model, fp32, batch_size),
                    "onnx-int8": _onnx_encoder(model, int8, batch_size)}
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
