"""Load on the REST service: N concurrent clients on loopback for a bounded time, for search and for ask.

Starts `rag serve` on a fresh workspace holding the sample corpus (`rag ingest data/samples`), waits
until it is ready, then for each kind runs N clients (default 20) that send requests back to back for a
fixed time (default 60 s). Ask requests stream (server-sent events), so time to first token is measured
too. A request still running when time is up is cut off and counted as unfinished, not as an error; a
cut-off stream also stops its generation on the server. Meanwhile /healthz is polled, to show the
service stays responsive under load. Target (issue 4): 20 clients for 60 s, 0 errors.

Two hostile kinds repeat what once took the service down (issue 15), and report the worst /healthz
latency while they run: ``uploads`` (one slow upload of ~300 KB of text, then every client uploads
small files back to back; 503 + Retry-After from the full writer queue counts as refused, not as an
error) and ``bigbody`` (3.5 MB JSON bodies of 300k unknown keys, which must be 413, alternating with
250 KB ones of 20k unknown keys to /v1/attribute, the one route that takes bodies that big, which
must be a short 422). They only ever target loopback.

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
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class Outcome:
    ok: bool
    first_token_s: float | None = None
    error: str | None = None
    refused: bool = False


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
    refused: int = 0  # 503 + Retry-After: the server said when to come back

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
            "refused_503": self.refused,
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


SMALL_UPLOAD = "# Field note {i}\n\nThe lamp at station {i} was trimmed at dusk and logged at {i} past six.\n"
# ~300 KB of distinct sentences: several hundred chunks to embed, so the writer is busy for a while
SLOW_UPLOAD = "".join(
    f"## Watch {n}\n\nKeeper {n % 37} noted wind from bearing {n * 7 % 360} and visibility of {n % 19} "
    f"miles; the lens turned {n % 5} times a minute and the oil stock stood at {n * 13 % 900} gallons.\n\n"
    for n in range(1600)
)
HUGE_BODY = json.dumps({f"k{n}": n for n in range(300_000)}).encode()  # ~3.5 MB
# ~250 KB: under the attribute route's body limit, so it is parsed and validated
MANY_KEYS_BODY = json.dumps({"question": "q", "answer": "a", **{f"k{n}": 0 for n in range(20_000)}}).encode()


async def _upload(client: httpx.AsyncClient, i: int) -> Outcome:
    files = [("file", (f"note-{os.getpid()}-{i}.md", SMALL_UPLOAD.format(i=i).encode()))]
    r = await client.post("/v1/documents", files=files)
    if r.status_code == 503 and "retry-after" in r.headers:
        return Outcome(False, refused=True)
    ok = r.status_code == 200 and r.json()["failed"] == []
    return Outcome(ok, error=None if ok else f"{r.status_code} {r.text[:200]}")


async def _big_body(client: httpx.AsyncClient, i: int) -> Outcome:
    path, body, expected = ("/v1/search", HUGE_BODY, 413) if i % 2 else ("/v1/attribute", MANY_KEYS_BODY, 422)
    r = await client.post(path, content=body, headers={"content-type": "application/json"})
    ok = r.status_code == expected and len(r.content) < 10_000
    return Outcome(ok, error=None if ok else f"{r.status_code} ({len(r.content):,} bytes) {r.text[:100]}")


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
        if kind == "uploads":
            await asyncio.sleep(1.0)  # the slow upload goes first, so the flood queues behind it
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
                elif outcome.refused:
                    phase.refused += 1
                    await asyncio.sleep(0.5)  # a polite client backs off (less than Retry-After: a flood)
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

    async def slow_upload() -> None:
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=None) as client:
            files = [("file", (f"watch-log-{os.getpid()}.md", SLOW_UPLOAD.encode()))]
            r = await client.post("/v1/documents", files=files)
            if r.status_code != 200:
                phase.errors.append(f"slow upload {r.status_code} {r.text[:200]}")

    background = [slow_upload()] if kind == "uploads" else []
    await asyncio.gather(watch_health(), *background, *(one_client(n) for n in range(clients)))
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
    senders = {"search": _search, "ask": _ask, "uploads": _upload, "bigbody": _big_body}
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
        k, unit = p["kind"], "s" if p["kind"] in ("ask", "uploads") else "ms"
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
        if k == "uploads":
            rows.append(("uploads: refused (503 + Retry-After)", p["refused_503"], ""))
        rows += [
            (f"{k}: errors", p["errors"], "0"),
            (f"{k}: /healthz p99 ms meanwhile", _scaled(p["healthz_p99_s"], 1000.0), ""),
            (f"{k}: /healthz worst ms meanwhile", _scaled(p["healthz_max_s"], 1000.0), "< 1000"),
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
    kinds = "comma-separated: search, ask, uploads, bigbody"
    parser.add_argument("--kinds", default="search,ask", help=kinds)
    args = parser.parse_args(argv)
    host = httpx.URL(args.url).host if args.url else "127.0.0.1"
    if host not in LOOPBACK:
        parser.error(f"--url must be a loopback address ({', '.join(LOOPBACK)}), not {host}")
    run(args.clients, args.seconds, args.url, tuple(k for k in args.kinds.split(",") if k))


if __name__ == "__main__":
    main()
