"""Per-chunk KV reuse for "parallel" prefill (APE/TurboRAG style, no training).

Each retrieved chunk's keys and values are computed once, right after the shared instruction
prefix and independently of the other chunks, and kept in a bounded in-memory LRU. A prompt is then
assembled from the prefix, the cached chunk units and the numbering glue between them; only the
question and the template tail are run. Keys carry their position in RoPE's rotation, so a unit
cached at the canonical offset (just after the prefix) is moved to where it lands by rotating its
keys once more: R(delta) R(p) k = R(p + delta) k. Values carry no position.

The approximation: chunk tokens do not attend to the other chunks (the question and the answer
attend to everything, so attention masses still come from the answering pass itself).

Correctness does not depend on invalidation: a unit's key is its chunk id and a hash of its token
ids, so a changed chunk never meets a stale entry. `retain` frees the memory of chunks that are gone
or changed; the LRU bounds it in any case.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

# RoPE variants whose rotation composes additively in the position (inv_freq fixed, no rescaling of
# cos/sin with length): shifting a cached key by delta is exact for these only.
SHIFTABLE_ROPE = ("default", "linear")

KV = tuple[tuple[torch.Tensor, torch.Tensor], ...]  # per layer: (1, kvH, n, D) keys and values


def digest(data: str) -> str:
    return hashlib.blake2b(data.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


@dataclass(frozen=True)
class UnitKey:
    chunk_id: int | None  # None for the glue between chunks ("\n\n[2]")
    tokens: str  # digest of the unit's token ids
    text: str = ""  # digest of the chunk's text as stored, to tell a re-ingested chunk from its old self

    @classmethod
    def of(cls, chunk_id: int | None, token_ids: Sequence[int], text: str = "") -> UnitKey:
        return cls(chunk_id, digest(",".join(map(str, token_ids))), digest(text) if text else "")


class ChunkKVCache:
    """Keys and values of prompt units at the canonical offset, least recently used evicted first
    once their total size passes max_bytes. Thread-safe: the service answers on several threads."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[UnitKey, tuple[KV, int]] = OrderedDict()
        self._lock = threading.Lock()
        self.nbytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, key: UnitKey) -> KV | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[0]

    def put(self, key: UnitKey, kv: KV) -> None:
        size = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in kv)
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.nbytes -= old[1]
            self._entries[key] = (kv, size)
            self.nbytes += size
            while self.nbytes > self.max_bytes:
                _, (_, freed) = self._entries.popitem(last=False)
                self.nbytes -= freed

    def chunk_ids(self) -> set[int]:
        with self._lock:
            return {k.chunk_id for k in self._entries if k.chunk_id is not None}

    def retain(self, live: Mapping[int, str]) -> None:
        """Keep only the units of chunks that still exist with the same text (live: chunk id -> text);
        a deleted chunk, or one whose id now holds other text, goes."""
        digests = {chunk_id: digest(text) for chunk_id, text in live.items()}
        with self._lock:
            stale = [k for k in self._entries if k.chunk_id is not None and digests.get(k.chunk_id) != k.text]
            for key in stale:
                self.nbytes -= self._entries.pop(key)[1]

    def __len__(self) -> int:
        return len(self._entries)


def rope_of(model: Any) -> Any | None:
    """The model's rotary embedding module when shifting cached keys by rotation is exact, else None."""
    rotary = getattr(getattr(model, "base_model", model), "rotary_emb", None)
    if rotary is None or getattr(rotary, "rope_type", None) not in SHIFTABLE_ROPE:
        return None
    if float(getattr(rotary, "attention_scaling", 1.0)) != 1.0:
        return None
    return rotary


def shift_keys(rotary: Any, keys: torch.Tensor, delta: int) -> torch.Tensor:
    """Keys (1, kvH, n, D) rotated as if every position were `delta` further on."""
    if delta == 0:
        return keys
    position = torch.tensor([[delta]], device=keys.device)
    cos, sin = rotary(keys, position)  # (1, 1, D) each
    cos, sin = cos[:, None], sin[:, None]
    half = keys.shape[-1] // 2
    rotated_half = torch.cat((-keys[..., half:], keys[..., :half]), dim=-1)
    return keys * cos + rotated_half * sin
