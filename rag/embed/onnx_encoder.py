"""The embedder under ONNX Runtime (RAG_EMBED_BACKEND=onnx or onnx-int8), exported once from the
configured sentence-transformers model.

Not the default: on the 2-core CPU here ONNX fp32 embedded at 0.88x torch's speed and dynamic int8
at 0.62x with dense nDCG@10 -0.013 (``python -m bench encoder``); it is for machines where ONNX
Runtime is the faster one. The whole sentence model (transformer, pooling, normalisation) is one
graph, exported by torch.onnx's legacy exporter; int8 is onnxruntime's ``quantize_dynamic`` of that
graph. optimum (what sentence-transformers' ``backend="onnx"`` uses) is not usable: optimum-onnx
0.1.0 pins transformers < 4.58 and sightline needs >= 5.24.

The files live in ``MODELS/onnx/<model>-<digest>/`` (the digest covers the model folder's files, so
a changed model is exported again) and are written under a temporary name and renamed: a crash
leaves no half-written graph, and of two processes exporting at once the later rename wins with the
same bytes. Tokenisation stays the sentence model's, so truncation and chunking are unchanged.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rag.readonly import ReadOnly, writable

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
EXTRA = 'pip install "sightline[onnx]"'


def require_onnx(backend: str) -> None:
    """A clear error, before any model work, where the ONNX packages are not installed."""
    missing = []
    for module in ("onnxruntime", "onnx"):
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise RuntimeError(f"RAG_EMBED_BACKEND={backend} needs {' and '.join(missing)}, the 'onnx' extra: "
                           f"{EXTRA}, or set RAG_EMBED_BACKEND=torch")


def export(model: Any, path: Path) -> None:
    """The sentence model as one fp32 ONNX graph at ``path`` (inputs: what its tokenizer gives)."""
    sample = model.preprocess(["an example", "a slightly longer example sentence"])
    names = [n for n in INPUT_NAMES if n in sample]

    class Whole(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.st = model

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            features = {**dict(zip(names, tensors, strict=True)), "modality": "text"}
            return self.st(features)["sentence_embedding"]

    axes = {name: {0: "batch", 1: "tokens"} for name in names}
    # the tracer warns of shape checks it freezes (mask length == token count, no causal mask): true
    # of every encoder input, and tests/test_onnx_embedder.py checks the graph over other lengths
    with _replaced(path) as temp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Whole().eval(), tuple(sample[n] for n in names), str(temp), dynamo=False,
                          opset_version=17, input_names=names, output_names=["sentence_embedding"],
                          dynamic_axes={**axes, "sentence_embedding": {0: "batch"}})


def quantize(fp32: Path, path: Path) -> None:
    """Dynamic int8 weights of an exported graph, at ``path``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _replaced(path) as temp:
        quantize_dynamic(str(fp32), str(temp), weight_type=QuantType.QInt8)


@contextmanager
def _replaced(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path``, renamed onto it when the block succeeds, removed if not."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    temp = Path(name)
    try:
        yield temp
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def model_file(model: Any, spec: str, source: str, models_dir: Path, backend: str) -> Path:
    """The graph for ``backend`` of the model ``spec`` (at ``source``), exported (and quantised) on
    first use, with a progress line on stderr."""
    folder = models_dir / "onnx" / _folder_name(spec, source)
    fp32, int8 = folder / "model.onnx", folder / "model_int8.onnx"
    target = int8 if backend == "onnx-int8" else fp32
    if target.exists():
        return target
    if not writable(folder):
        raise ReadOnly(f"the ONNX embedder is not exported yet and {models_dir} is read-only: run once "
                       "where it can be written, set RAG_MODELS_CACHE to a writable folder, or set "
                       "RAG_EMBED_BACKEND=torch")
    if not fp32.exists():
        print(f"exporting the embedder to ONNX, once: {fp32}", file=sys.stderr, flush=True)
        export(model, fp32)
    if target is int8:
        print(f"quantising the ONNX embedder to int8, once: {int8}", file=sys.stderr, flush=True)
        quantize(fp32, int8)
    return target


def _folder_name(spec: str, source: str) -> str:
    """The readable spec, then a digest of the model's path and its files' sizes and times."""
    root = Path(source)
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
    stats = [(str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    digest = hashlib.blake2b(repr((source, stats)).encode(), digest_size=8).hexdigest()
    return f"{re.sub(r'[^A-Za-z0-9._+]', '_', spec)[-64:]}-{digest}"


class OnnxEncoder:
    """Embeddings from an exported graph, tokenised by the sentence model, batches sorted by length
    as its own encode does."""

    def __init__(self, model: Any, path: Path) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = torch.get_num_threads(), 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.model = model

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:  # (n, dim) float32, L2-normalised
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out: np.ndarray | None = None
        for start in range(0, len(texts), batch_size):
            idx = order[start : start + batch_size]
            features = self.model.preprocess([texts[i] for i in idx])
            (vectors,) = self.session.run(None, {n: features[n].numpy() for n in self.inputs})
            if out is None:
                out = np.zeros((len(texts), vectors.shape[1]), dtype=np.float32)
            out[idx] = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        assert out is not None, "encode is not called without texts"
        return out
