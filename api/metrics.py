"""Prometheus metrics: requests and latencies per route, per-stage answer timings, index size and
whether the generator is loaded.

Each app owns its registry (several apps can live in one test process). Under several uvicorn
workers `rag serve` sets PROMETHEUS_MULTIPROC_DIR: each worker then writes its samples there and a
scrape of any worker aggregates all of them. Index size is read from SQL at scrape time, so every
worker reports the same, current number.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rag.types import Answer

if TYPE_CHECKING:
    from rag.generate.decoding import Generation

HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
STAGE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0)
STAGES = ("retrieve", "prefill", "decode", "attribute", "total")


class _StoreCollector(Collector):
    """Documents and chunks in the workspace, counted in SQL at scrape time (the FAISS index is
    reconciled to SQL, so this is the index size too)."""

    def __init__(self, counts: Callable[[], tuple[int, int]]) -> None:
        self.counts = counts

    def describe(self) -> list[Metric]:
        return []  # nothing to declare up front; collect() queries SQL only when scraped

    def collect(self) -> Iterator[Metric]:
        try:
            documents, chunks = self.counts()
        except SQLAlchemyError:  # the database is down: /metrics still answers, without these two
            return
        yield GaugeMetricFamily("sightline_documents", "Documents ingested without error", value=documents)
        yield GaugeMetricFamily("sightline_index_chunks", "Chunks in the index", value=chunks)


class Metrics:
    def __init__(self, counts: Callable[[], tuple[int, int]]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "sightline_http_requests",
            "HTTP requests by method, route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "sightline_http_request_duration_seconds",
            "Time until the response ended (for a stream: the whole stream)",
            ["method", "route"],
            buckets=HTTP_BUCKETS,
            registry=self.registry,
        )
        self.stages = Histogram(
            "sightline_answer_stage_seconds",
            "Time per answer stage, from Answer.timings",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=self.registry,
        )
        self.answers = Counter("sightline_answers", "Answers by outcome", ["outcome"], registry=self.registry)
        self.generator_loaded = Gauge(
            "sightline_generator_loaded",
            "1 when the generator is loaded (with several workers: in every live worker)",
            multiprocess_mode="livemin",
            registry=self.registry,
        )
        self.prompt_cache = Counter(
            "sightline_prompt_cache",
            "Answer prompts by KV cache use: the instruction prefix (hit/miss) and, in parallel prefill, "
            "chunk units (hit/miss)",
            ["cache", "result"],
            registry=self.registry,
        )
        self._store = _StoreCollector(counts)
        self.registry.register(self._store)

    def observe_answer(self, answer: Answer) -> None:
        t = answer.timings
        times = (t.retrieve_ms, t.prefill_ms, t.decode_ms, t.attribute_ms, t.total_ms)
        for stage, ms in zip(STAGES, times, strict=True):
            self.stages.labels(stage).observe(ms / 1000)
        flagged = answer.hallucination.flagged
        outcome = "abstained" if answer.abstained else "flagged" if flagged else "answered"
        self.answers.labels(outcome).inc()

    def observe_generation(self, generation: Generation) -> None:
        self.prompt_cache.labels("prefix", "hit" if generation.prompt.prefix_len else "miss").inc()
        if generation.units_cached:
            self.prompt_cache.labels("chunk", "hit").inc(generation.units_cached)
        if generation.units_encoded:
            self.prompt_cache.labels("chunk", "miss").inc(generation.units_encoded)

    def exposition(self) -> bytes:
        """The text format; across all workers when they share a multiprocess folder."""
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        registry.register(self._store)
        return generate_latest(registry)


class HttpMetrics:
    """ASGI middleware counting every request by its route *template* (bounded label values), including
    the ones that end in an unhandled error. Requests that never reach a route (unknown paths, and 401
    or 413 answered before routing) are counted as route "unmatched"."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app raises before responding

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope["method"]
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - started)
