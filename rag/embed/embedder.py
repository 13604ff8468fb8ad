"""Sentence embeddings from a sentence-transformers model (the packaged MiniLM by default), run by
torch or, with RAG_EMBED_BACKEND, by ONNX Runtime (rag/embed/onnx_encoder.py)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
from sentence_transformers import SentenceTransformer

from rag.config import Settings
from rag.embed.onnx_encoder import OnnxEncoder, model_file, require_onnx
from rag.parse.chunking import OffsetTokenizer
from rag.resources import resolve_model_path
from rag.types import EMBED_BACKENDS


class Embedder:
    """Batched, L2-normalised float32 embeddings: inner product is cosine similarity."""

    def __init__(self, spec: str, device: str = "cpu", batch_size: int = 64, backend: str = "torch",
                 models_dir: Path | None = None) -> None:
        if backend not in EMBED_BACKENDS:
            raise ValueError(f"the embedder backend is one of {', '.join(EMBED_BACKENDS)}, not {backend!r}")
        if backend != "torch":
            require_onnx(backend)
            if device != "cpu" or models_dir is None:
                raise ValueError(f"the {backend} embedder runs on the CPU and needs a models folder")
        self.name = spec
        source = resolve_model_path(spec)
        self.model = SentenceTransformer(source, device=device)
        self.batch_size = batch_size
        dim = self.model.get_embedding_dimension()
        if dim is None:
            raise RuntimeError(f"embedder '{spec}' does not report a fixed embedding size")
        self.dim: int = dim
        # The chunker measures whole documents in the model's tokens, so it gets a copy of the
        # tokenizer without a length limit. The model's own stays as it is: its limit is the model's
        # max_seq_length (raising one raised the other, and a long query or chunk then ran past the
        # 512 position embeddings instead of being truncated at 256, as the model was trained).
        self.chunk_tokenizer = copy.deepcopy(self.model.tokenizer)
        self.chunk_tokenizer.model_max_length = 10**9
        self.onnx = None
        if backend != "torch" and models_dir is not None:
            self.onnx = OnnxEncoder(self.model, model_file(self.model, spec, source, models_dir, backend))

    @classmethod
    def from_settings(cls, settings: Settings) -> Embedder:
        return cls(settings.embedder, device=settings.device, batch_size=settings.embed_batch_size,
                   backend=settings.embed_backend, models_dir=settings.models_dir)

    @property
    def tokenizer(self) -> OffsetTokenizer:
        """For chunking: no length limit (see ``__init__``)."""
        return self.chunk_tokenizer

    @property
    def max_tokens(self) -> int:
        """Longest input (without [CLS]/[SEP]) the model embeds without truncating."""
        return int(self.model.max_seq_length or 256) - 2

    def encode(self, texts: list[str]) -> np.ndarray:  # (n, dim) float32
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self.onnx is not None:
            return self.onnx.encode(texts, self.batch_size)
        vectors = self.model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)
