"""Sentence embeddings from a sentence-transformers model (the packaged MiniLM by default)."""

from __future__ import annotations

import numpy as np
from sentence_transformers import SentenceTransformer

from rag.chunking import OffsetTokenizer
from rag.resources import resolve_model_path


class Embedder:
    """Batched, L2-normalised float32 embeddings: inner product is cosine similarity."""

    def __init__(self, spec: str, device: str = "cpu", batch_size: int = 64) -> None:
        self.name = spec
        self.model = SentenceTransformer(resolve_model_path(spec), device=device)
        self.batch_size = batch_size
        dim = self.model.get_embedding_dimension()
        if dim is None:
            raise RuntimeError(f"embedder '{spec}' does not report a fixed embedding size")
        self.dim: int = dim
        # Chunk whole documents without the tokenizer complaining about their length.
        self.model.tokenizer.model_max_length = 10**9

    @property
    def tokenizer(self) -> OffsetTokenizer:
        return self.model.tokenizer

    @property
    def max_tokens(self) -> int:
        """Longest input (without [CLS]/[SEP]) the model embeds without truncating."""
        return int(self.model.max_seq_length or 256) - 2

    def encode(self, texts: list[str]) -> np.ndarray:  # (n, dim) float32
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)
