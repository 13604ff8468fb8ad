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
or changed (and their files); the LRU bounds both in any case.

The disk tier (off unless RAG_KV_DISK_MB > 0): a restarted service, or another process on the same
home, would otherwise encode every chunk again on its first asks; reading a unit back costs a file
read instead of a forward over its tokens. Units live under ``HOME/kv/<model>/``, where <model> names
the generator and digests everything the keys and values depend on besides the unit's tokens (the
weights' path, dtype, quantisation, device and torch version, the instruction prefix they follow).
One file per unit, named by its key (chunk id, text digest, token digest), so ``retain`` finds the
units of gone or changed chunks from the names alone.

A file is the blake2b digest of its body, then the body (safetensors: ``k<layer>``, ``v<layer>``). It is
written under a temporary name and renamed, so a reader never sees half of one; a file that does not
match its digest (torn by a power loss, truncated, damaged) is a miss and is removed. Once the files
pass ``max_bytes``, the least recently used go (mtime, touched on each hit). The bound holds this
process's view: files seen when the folder was opened and those it wrote since. A folder that cannot
be written (read-only home) gives no tier, and a write that fails is dropped: the cache then works
from memory only.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from rag.readonly import writable

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
    once their total size passes max_bytes; with a disk tier, a memory miss is looked up there and a
    hit is promoted to memory. Thread-safe: the service answers on several threads."""

    def __init__(self, max_bytes: int, disk: KVDisk | None = None) -> None:
        self.max_bytes = max_bytes
        self.disk = disk
        self._entries: OrderedDict[UnitKey, tuple[KV, int]] = OrderedDict()
        self._lock = threading.Lock()
        self.nbytes = 0
        self.hits = 0  # from memory or disk
        self.disk_hits = 0
        self.misses = 0

    def get(self, key: UnitKey) -> KV | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return entry[0]
        kv = self.disk.get(key) if self.disk is not None else None  # read outside the lock
        with self._lock:
            if kv is None:
                self.misses += 1
                return None
            self.hits += 1
            self.disk_hits += 1
        self._remember(key, kv)
        return kv

    def put(self, key: UnitKey, kv: KV) -> None:
        self._remember(key, kv)
        if self.disk is not None:
            self.disk.put(key, kv)

    def _remember(self, key: UnitKey, kv: KV) -> None:
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
        """Chunks with a unit in memory or on disk."""
        with self._lock:
            ids = {k.chunk_id for k in self._entries if k.chunk_id is not None}
        return ids | (self.disk.chunk_ids() if self.disk is not None else set())

    def retain(self, live: Mapping[int, str]) -> None:
        """Keep only the units of chunks that still exist with the same text (live: chunk id -> text);
        a deleted chunk, or one whose id now holds other text, goes from memory and disk."""
        digests = {chunk_id: digest(text) for chunk_id, text in live.items()}
        with self._lock:
            stale = [k for k in self._entries if k.chunk_id is not None and digests.get(k.chunk_id) != k.text]
            for key in stale:
                self.nbytes -= self._entries.pop(key)[1]
        if self.disk is not None:
            self.disk.retain(digests)

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


# ---- disk tier

SUFFIX = ".kv"
DIGEST_BYTES = 16
STALE_TEMP_S = 3600  # a temporary file this old is a crashed writer's, not one being written


def model_folder(name: str, model: Any, prefix_ids: Sequence[int]) -> str:
    """The folder name for one generator's units: readable name, then a digest of what they depend on."""
    parameter = next(model.parameters())
    # dynamic int8 swaps the linear layers' classes and leaves the first parameter's dtype alone
    layers = sorted({f"{type(m).__module__}.{type(m).__qualname__}" for m in model.modules()})
    identity = repr((name, getattr(model.config, "_name_or_path", ""), str(parameter.dtype), layers,
                     parameter.device.type, torch.__version__, list(prefix_ids)))
    readable = re.sub(r"[^A-Za-z0-9._+]", "_", name)[:64]
    return f"{readable}-{hashlib.blake2b(identity.encode(), digest_size=8).hexdigest()}"


def file_name(key: UnitKey) -> str:
    chunk = "g" if key.chunk_id is None else str(key.chunk_id)
    return f"{chunk}-{key.text or 'x'}-{key.tokens}{SUFFIX}"


def key_of(name: str) -> UnitKey | None:
    """The key a file name stands for; None for anything else found in the folder."""
    parts = name.removesuffix(SUFFIX).split("-")
    if not name.endswith(SUFFIX) or len(parts) != 3 or not (parts[0] == "g" or parts[0].isdigit()):
        return None
    chunk, text, tokens = parts
    return UnitKey(None if chunk == "g" else int(chunk), tokens, "" if text == "x" else text)


def encode(kv: KV) -> bytes:
    tensors = {}
    for layer, (k, v) in enumerate(kv):
        tensors[f"k{layer}"], tensors[f"v{layer}"] = k.cpu().contiguous(), v.cpu().contiguous()
    body = save_tensors(tensors)
    return _checksum(body) + body


def _checksum(body: bytes) -> bytes:
    return hashlib.blake2b(body, digest_size=DIGEST_BYTES).digest()


def decode(raw: bytes, device: torch.device) -> KV | None:
    """The unit a file holds, or None when the file is not a whole, intact one."""
    body = raw[DIGEST_BYTES:]
    if len(raw) <= DIGEST_BYTES or _checksum(body) != raw[:DIGEST_BYTES]:
        return None
    try:
        tensors = load_tensors(body)
        return tuple((tensors[f"k{i}"].to(device), tensors[f"v{i}"].to(device))
                     for i in range(len(tensors) // 2))
    except (SafetensorError, KeyError):  # an intact body that is not a unit: written by something else
        return None


class KVDisk:
    """Unit files in one folder, least recently used removed past max_bytes. Thread-safe."""

    def __init__(self, folder: Path, max_bytes: int, device: torch.device | str = "cpu") -> None:
        self.folder, self.max_bytes, self.device = folder, max_bytes, torch.device(device)
        self._files: OrderedDict[UnitKey, int] = OrderedDict()  # least recently used first: size
        self._lock = threading.Lock()
        self.nbytes = 0
        folder.mkdir(parents=True, exist_ok=True)
        found = []
        for path in folder.iterdir():
            try:
                stat = path.stat()
            except OSError:
                continue  # removed meanwhile by another process
            key = key_of(path.name)
            if key is not None:
                found.append((stat.st_mtime, key, stat.st_size))
            elif path.name.endswith(".tmp") and time.time() - stat.st_mtime > STALE_TEMP_S:
                path.unlink(missing_ok=True)
        for _, key, size in sorted(found, key=lambda entry: entry[0]):
            self._files[key] = size
            self.nbytes += size
        self._evict()

    @classmethod
    def open(cls, folder: Path, max_bytes: int, device: torch.device | str = "cpu") -> KVDisk | None:
        """The tier in ``folder``, or None where it is off (max_bytes 0) or the folder cannot be written."""
        if max_bytes <= 0 or not writable(folder):
            return None
        try:
            return cls(folder, max_bytes, device)
        except OSError:
            return None

    def get(self, key: UnitKey) -> KV | None:
        path = self.folder / file_name(key)
        try:
            raw = path.read_bytes()
        except OSError:
            return None
        kv = decode(raw, self.device)
        if kv is None:
            self._remove([key])
            return None
        with suppress(OSError):
            os.utime(path)  # recency survives the process: the next one's scan orders by mtime
        with self._lock:
            if key in self._files:
                self._files.move_to_end(key)
            else:  # written by another process since this one scanned the folder
                self._files[key] = len(raw)
                self.nbytes += len(raw)
        return kv

    def put(self, key: UnitKey, kv: KV) -> None:
        raw = encode(kv)
        if len(raw) > self.max_bytes:
            return
        path = self.folder / file_name(key)
        temp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            temp.write_bytes(raw)
            os.replace(temp, path)
        except OSError:  # disk full, folder gone or made read-only: memory still has the unit
            temp.unlink(missing_ok=True)
            return
        with self._lock:
            self.nbytes += len(raw) - self._files.pop(key, 0)
            self._files[key] = len(raw)
        self._evict()

    def chunk_ids(self) -> set[int]:
        with self._lock:
            return {k.chunk_id for k in self._files if k.chunk_id is not None}

    def retain(self, digests: Mapping[int, str]) -> None:
        """Remove the units of chunks not in ``digests`` (chunk id -> text digest) with the same text."""
        with self._lock:
            stale = [k for k in self._files if k.chunk_id is not None and digests.get(k.chunk_id) != k.text]
        self._remove(stale)

    def _evict(self) -> None:
        victims = []
        with self._lock:
            while self.nbytes > self.max_bytes and self._files:
                key, size = self._files.popitem(last=False)
                self.nbytes -= size
                victims.append(key)
        self._unlink(victims)

    def _remove(self, keys: list[UnitKey]) -> None:
        with self._lock:
            for key in keys:
                self.nbytes -= self._files.pop(key, 0)
        self._unlink(keys)

    def _unlink(self, keys: list[UnitKey]) -> None:
        for key in keys:
            with suppress(OSError):  # a folder turned read-only: the entry still leaves the bound
                (self.folder / file_name(key)).unlink(missing_ok=True)

    def __len__(self) -> int:
        return len(self._files)
