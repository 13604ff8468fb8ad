"""Continuous batching: concurrent asks share each decoding forward.

One scheduler thread owns the model. At every step boundary it admits waiting requests (each
prefilled alone, exactly as `Generator.generate` does, so its first token and masses are its solo
ones), then runs one forward for every active request: their KV caches sit in one batched cache,
left-padded to a common length, with a padding mask and per-row positions so that every row sees
what it would see alone. Each row keeps its own `Decoding` (attention reducer, text stream, stop
conditions); a request that ends or whose client left (its `on_token` raised) leaves the batch at
once. Written here because no library batches our attention-collecting forward (vLLM and TGI batch
their own kernels); the design follows their continuous batching.

Greedy output equals the solo output in fp32. With dynamic int8 the activations of a batch share
one quantization scale, so a request's tokens may differ slightly from its solo run.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from transformers import DynamicCache

from rag.generate.decoding import Decoding, Generation
from rag.generate.generator import Generator
from rag.types import Source


@dataclass
class _Job:
    question: str
    sources: Sequence[Source]
    max_new_tokens: int | None
    on_token: Callable[[str], None] | None
    done: threading.Event = field(default_factory=threading.Event)
    result: Generation | None = None
    error: BaseException | None = None


@dataclass
class _Row:
    job: _Job
    decoding: Decoding
    pad: int  # left-padding columns in the batched cache


class _BatchReducer:
    """Hands each row's attention weights, padding cut off, to that row's own reducer."""

    rows = slice(None)

    def __init__(self, batch: list[_Row]) -> None:
        self.batch = batch

    def __call__(self, layer: int, weights: torch.Tensor) -> None:  # (B, H, 1, K)
        for b, row in enumerate(self.batch):
            row.decoding.reducer(layer, weights[b : b + 1, :, :, row.pad :])


class DecodeBatcher:
    """`generate` with the signature of `Generator.generate`, decoded in a shared batch."""

    def __init__(self, generator: Generator, max_batch: int = 8) -> None:
        self.generator = generator
        self.max_batch = max_batch
        self._waiting: queue.Queue[_Job] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.peak_batch = 0  # the largest batch decoded so far (for the bench and tests)

    def generate(
        self,
        question: str,
        sources: Sequence[Source],
        *,
        max_new_tokens: int | None = None,
        on_token: Callable[[str], None] | None = None,
    ) -> Generation:
        """Block until this request's answer is decoded; on_token runs on the scheduler thread and
        may raise to leave (the exception is re-raised here)."""
        job = _Job(question, sources, max_new_tokens, on_token)
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="sightline-batch", daemon=True)
                self._thread.start()
        self._waiting.put(job)
        job.done.wait()
        if job.error is not None:
            raise job.error
        assert job.result is not None
        return job.result

    # ---- the scheduler thread

    def _run(self) -> None:
        batch: list[_Row] = []
        cache: DynamicCache | None = None
        while True:
            first = None if batch else self._waiting.get()  # idle: sleep until a request comes
            cache = self._admit(batch, cache, first)
            cache = self._emit(batch, cache)
            if not batch:
                continue
            assert cache is not None
            try:
                self._step(batch, cache)
            except BaseException as e:  # every waiting caller gets it; the thread lives on
                for row in batch:
                    row.job.error = e
                    row.job.done.set()
                batch, cache = [], None

    @torch.inference_mode()
    def _admit(
        self, batch: list[_Row], cache: DynamicCache | None, first: _Job | None
    ) -> DynamicCache | None:
        while len(batch) < self.max_batch:
            if first is not None:
                job, first = first, None
            else:
                try:
                    job = self._waiting.get_nowait()
                except queue.Empty:
                    break
            try:
                decoding = self.generator.start(job.question, job.sources, max_new_tokens=job.max_new_tokens)
            except BaseException as e:  # the caller re-raises it
                job.error = e
                job.done.set()
                continue
            cache = self._join(batch, cache, _Row(job, decoding, 0))
        self.peak_batch = max(self.peak_batch, len(batch))
        return cache

    def _emit(self, batch: list[_Row], cache: DynamicCache | None) -> DynamicCache | None:
        """Each row emits its newest token; rows that ended (or whose client left) leave."""
        keep = []
        for row in batch:
            try:
                if row.decoding.advance(row.job.on_token):
                    keep.append(row)
                    continue
                row.job.result = row.decoding.finish(row.job.on_token)
            except BaseException as e:  # a client that left: its on_token raised
                row.job.error = e
            row.job.done.set()
        if len(keep) == len(batch):
            return cache
        cache = self._select(cache, [batch.index(r) for r in keep], [r.pad for r in keep]) if keep else None
        shift = min((r.pad for r in keep), default=0)
        for row in keep:
            row.pad -= shift
        batch[:] = keep
        return cache

    @torch.inference_mode()
    def _step(self, batch: list[_Row], cache: DynamicCache) -> None:
        device = self.generator.device
        width = cache.get_seq_length() + 1
        mask = torch.ones(len(batch), width, dtype=torch.long, device=device)
        for b, row in enumerate(batch):
            mask[b, : row.pad] = 0
        ids = torch.tensor([[row.decoding.token] for row in batch], device=device)
        positions = torch.tensor([[width - 1 - row.pad] for row in batch], device=device)
        out = self.generator.model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache,
                                   use_cache=True, logits_to_keep=1, attention_reducer=_BatchReducer(batch))
        for b, row in enumerate(batch):
            row.decoding.accept(out.logits[b, -1])

    def _select(self, cache: DynamicCache | None, rows: list[int], pads: list[int]) -> DynamicCache | None:
        """The batched cache with only these rows, leading columns that are padding in all of them cut."""
        if cache is None:
            return None
        cut = min(pads)
        index = torch.tensor(rows, device=self.generator.device)
        kept = [(k.index_select(0, index)[:, :, cut:], v.index_select(0, index)[:, :, cut:])
                for k, v in _layers(cache)]
        return self.generator.cache_of(kept)

    def _join(self, batch: list[_Row], cache: DynamicCache | None, row: _Row) -> DynamicCache:
        """Add a prefilled request's cache to the batched one, left-padding whichever is shorter."""
        own = _layers(row.decoding.cache)
        row.decoding.cache = self.generator.cache_of([])  # its KV lives in the batch from now on
        if cache is None:
            batch.append(row)
            return self.generator.cache_of(own)
        shared = _layers(cache)
        length, new = shared[0][0].shape[2], own[0][0].shape[2]
        width = max(length, new)
        for r in batch:
            r.pad += width - length
        row.pad = width - new
        batch.append(row)
        merged = [
            (torch.cat([_pad(k, width), _pad(k2, width)]), torch.cat([_pad(v, width), _pad(v2, width)]))
            for (k, v), (k2, v2) in zip(shared, own, strict=True)
        ]
        return self.generator.cache_of(merged)


def _layers(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(layer.keys, layer.values) for layer in cast(list[Any], cache.layers)]


def _pad(x: torch.Tensor, width: int) -> torch.Tensor:
    """(B, kvH, K, D) left-padded with zeros to K = width (the mask hides them)."""
    missing = width - x.shape[2]
    return x if missing == 0 else torch.cat([x.new_zeros(*x.shape[:2], missing, x.shape[3]), x], dim=2)
