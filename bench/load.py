"""Load on the REST service: N concurrent clients on loopback for a bounded time, for search and for ask.

Starts `rag serve` on a fresh workspace holding the sample corpus (`rag ingest data/samples`), waits
until it is ready, then for each kind runs N clients (default 20) that send requests back to back for a
fixed time (default 60 s). Ask requests stream (server-sent events), so time to first token is measured
too. A request still running when time is up is cut off and counted as unfinished, not as an error; a
cut-off stream also stops its generation on the server. Meanwhile /healthz is polled, to show the
service stays responsive under load. Target (issue 4): 20 clients for 60 s, 0 errors.

`python -m bench load`, or `python -m bench.load --clients 20 --seconds 10 [--url URL]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from api.testing import free_port, wait_ready
from bench.common import REPO, report
from rag.config import Settings

QUESTIONS = [json.loads(line)["question"] for line in (REPO / "tests" / "data" / "probes.jsonl").open()]
HEALTH_EVERY_S = 0.2


@dataclass
class Outcome:
    ok: bool
    first_token_s: float | None = None
    error: str | None = None


@dataclass
class Phase:
    """What N clients achieved in one timed run."""

    kind: str
    clients: int
    seconds: float
    latencies_s: list[float] = field(default_factory=list)
    first_token_s: list[float] = field(default_factory=list)
    health_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    unfinished: int = 0

    def summary(self) -> dict[str, Any]:
        def pct(values: list[float], q: float) -> float | None:
            return float(np.percentile(values, q)) if values else None

        return {
            "kind": self.kind,
            "clients": self.clients,
            "seconds": self.seconds,
            "completed": len(self.latencies_s),
            "throughput_per_s": len(self.latencies_s) / self.seconds,
            "p50_s": pct(self.latencies_s, 50),
            "p99_s": pct(self.latencies_s, 99),
            "first_token_p50_s": pct(self.first_token_s, 50),
            "first_token_p99_s": pct(self.first_token_s, 99),
            "errors": len(self.errors),
            "error_samples": sorted(set(self.errors))[:5],
            "unfinished_at_deadline": self.unfinished,
            "healthz_p99_s": pct(self.health_s, 99),
            "healthz_max_s": max(self.health_s, default=None),
        }


async def _search(client: httpx.AsyncClient, i: int) -> Outcome:
    r = await client.post("/v1/search", json={"query": QUESTIONS[i % len(QUESTIONS)], "k": 5})
    ok = r.status_code == 200 and bool(r.json()["results"])
    return Outcome(ok, error=None if ok else f"{r.status_code} {r.text[:200]}")


async def _ask(client: httpx.AsyncClient, i: int) -> Outcome:
    started = time.perf_counter()
    first: float | None = None
    body = {"question": QUESTIONS[i % len(QUESTIONS)], "stream": True}
    async with client.stream("POST", "/v1/ask", json=body) as r:
        if r.status_code != 200:
            return Outcome(False, error=f"{r.status_code} {(await r.aread())[:200]!r}")
        event = ""
        async for line in r.aiter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
                if event == "token" and first is None:
                    first = time.perf_counter() - started
                elif event == "done":
                    return Outcome(True, first_token_s=first)
            elif line.startswith("data: ") and event == "error":
                return Outcome(False, error=f"error event {line[6:200]}")
    return Outcome(False, error="stream ended without a done event")


async def _drive(
    url: str,
    kind: str,
    clients: int,
    seconds: float,
    send: Callable[[httpx.AsyncClient, int], Awaitable[Outcome]],
) -> Phase:
    """``clients`` clients, each with its own connection, sending back to back until the deadline."""
    phase = Phase(kind, clients, seconds)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    headers = {"Authorization": f"Bearer {key}"} if (key := _first_key()) else {}

    async def one_client(n: int) -> None:
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=None) as client:
            i = n
            while (left := deadline - loop.time()) > 0:
                t0 = time.perf_counter()
                try:
                    outcome = await asyncio.wait_for(send(client, i), timeout=left)
                except TimeoutError:
                    phase.unfinished += 1
                    return
                except httpx.HTTPError as exc:
                    outcome = Outcome(False, error=f"{type(exc).__name__}: {exc}")
                if outcome.ok:
                    phase.latencies_s.append(time.perf_counter() - t0)
                    if outcome.first_token_s is not None:
                        phase.first_token_s.append(outcome.first_token_s)
                else:
                    phase.errors.append(outcome.error or "failed")
                i += clients

    async def watch_health() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            while loop.time() < deadline:
                t0 = time.perf_counter()
                r = await client.get("/healthz")
                phase.health_s.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    phase.errors.append(f"healthz {r.status_code}")
                await asyncio.sleep(HEALTH_EVERY_S)

    await asyncio.gather(watch_health(), *(one_client(n) for n in range(clients)))
    return phase


def _first_key() -> str | None:
    keys = Settings().api_key_list
    return keys[0] if keys else None


class _Server:
    """`rag serve` on a fresh workspace with the sample corpus ingested, on a free loopback port."""

    def __init__(self, workdir: Path) -> None:
        models = os.environ.get("RAG_MODELS_CACHE") or str(Settings().models_dir)
        self.env = {**os.environ, "RAG_HOME": str(workdir / "home"), "RAG_MODELS_CACHE": models}
        self.log = workdir / "server.log"
        self.url = f"http://127.0.0.1:{free_port()}"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> str:
        rag = str(Path(sys.executable).parent / "rag")
        ingest = [rag, "ingest", str(REPO / "data" / "samples"), "--json"]
        subprocess.run(ingest, env=self.env, check=True, capture_output=True)
        port = self.url.rsplit(":", 1)[1]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [rag, "serve", "--port", port], env=self.env, stdout=log, stderr=log
            )
        try:
            wait_ready(self.url, timeout=900, process=self.process)
        except Exception:
            self.__exit__()
            print(self.log.read_text()[-4000:], file=sys.stderr)
            raise
        return self.url

    def __exit__(self, *_: object) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=60)


async def _run_phases(url: str, clients: int, seconds: float, kinds: list[str]) -> list[Phase]:
    senders = {"search": _search, "ask": _ask}
    phases = []
    for kind in kinds:
        if kind == "search":  # warm-up, not reported (the server loaded the generator at start-up;
            await _drive(url, kind, 1, min(5.0, seconds), senders[kind])  # a cut-off ask would only delay)
        phases.append(await _drive(url, kind, clients, seconds, senders[kind]))
    return phases


def run(
    clients: int = 20,
    seconds: float = 60.0,
    url: str | None = None,
    kinds: tuple[str, ...] = ("search", "ask"),
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        if url is None:
            with _Server(Path(tmp)) as started:
                phases = asyncio.run(_run_phases(started, clients, seconds, list(kinds)))
        else:
            phases = asyncio.run(_run_phases(url, clients, seconds, list(kinds)))
    settings = Settings()
    data: dict[str, Any] = {
        "server": url or "rag serve (1 worker) on data/samples",
        "max_new_tokens": settings.max_new_tokens,
        "phases": [p.summary() for p in phases],
    }
    rows: list[tuple[str, Any, str]] = []
    for p in data["phases"]:
        k, unit = p["kind"], "s" if p["kind"] == "ask" else "ms"
        scale = 1.0 if unit == "s" else 1000.0
        rows += [
            (f"{k}: clients × seconds", f"{p['clients']} × {p['seconds']:.0f}", ""),
            (f"{k}: completed", p["completed"], ""),
            (f"{k}: throughput /s", p["throughput_per_s"], ""),
            (f"{k}: p50 {unit}", _scaled(p["p50_s"], scale), ""),
            (f"{k}: p99 {unit}", _scaled(p["p99_s"], scale), ""),
        ]
        if k == "ask":
            rows += [
                ("ask: first token p50 s", _scaled(p["first_token_p50_s"], 1.0), ""),
                ("ask: first token p99 s", _scaled(p["first_token_p99_s"], 1.0), ""),
                ("ask: unfinished at deadline", p["unfinished_at_deadline"], ""),
            ]
        rows += [
            (f"{k}: errors", p["errors"], "0"),
            (f"{k}: /healthz p99 ms meanwhile", _scaled(p["healthz_p99_s"], 1000.0), ""),
        ]
    report("load", rows, data)
    return data


def _scaled(value: float | None, scale: float) -> float | str:
    return "-" if value is None else value * scale


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60.0, help="per kind (search, then ask)")
    parser.add_argument("--url", help="an already running server (else one is started)")
    parser.add_argument("--kinds", default="search,ask", help="comma-separated: search, ask")
    args = parser.parse_args(argv)
    run(args.clients, args.seconds, args.url, tuple(k for k in args.kinds.split(",") if k))


if __name__ == "__main__":
    main()
