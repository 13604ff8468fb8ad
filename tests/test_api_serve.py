"""`rag serve --workers 2` on PostgreSQL, over real HTTP: both workers answer from one workspace. An
upload through one worker, an answer stored by one, a delete, and a `rag ingest` run in another
process are all seen by every worker without a restart; /metrics adds up all workers. Last,
schemathesis fuzzes every operation of /openapi.json against it: no server error, responses as
documented."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from rag.storage.orm import AnswerRecord
from tests.conftest import MODELS_CACHE, pg_schema
from tests.procs import serving, serving_process
from tests.streams import read_events

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
KEY = "serve-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
BIN = Path(sys.executable).parent
WORKERS = 2


@pytest.fixture(scope="module")
def env(pg_available: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The environment `rag serve` and `rag ingest` share: one home, one database."""
    with pg_schema() as url:
        yield {
            **os.environ,
            "RAG_HOME": str(tmp_path_factory.mktemp("serve") / "home"),
            "RAG_DATABASE_URL": url,
            "RAG_MODELS_CACHE": str(MODELS_CACHE),
            "RAG_API_KEYS": KEY,
            "RAG_MAX_NEW_TOKENS": "16",  # short answers and contexts keep generation quick
            "RAG_MAX_CONTEXT_TOKENS": "256",
            "RAG_TOP_K": "2",
        }


@pytest.fixture(scope="module")
def url(env: dict[str, str]) -> Iterator[str]:
    with serving([str(BIN / "rag"), "serve", "--workers", str(WORKERS)], env) as base:
        yield base


def fresh(url: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One request on a new connection, so successive calls spread over the workers."""
    with httpx.Client(base_url=url, headers=AUTH, timeout=600) as c:
        return c.request(method, path, **kwargs)


def over_workers(url: str, method: str, path: str, **kwargs: Any) -> list[httpx.Response]:
    """The same request answered by every worker. A connection stays with the worker that accepted
    it, so /healthz first on a new connection says which worker the request that follows reaches."""
    answered: dict[int, httpx.Response] = {}
    for _ in range(100):
        with httpx.Client(base_url=url, headers=AUTH, timeout=600) as c:
            pid = c.get("/healthz").json()["pid"]
            if pid not in answered:
                answered[pid] = c.request(method, path, **kwargs)
        if len(answered) == WORKERS:
            return list(answered.values())
    raise AssertionError(f"only workers {sorted(answered)} took connections")


def test_every_worker_is_ready_with_its_own_generator(url: str) -> None:
    seen: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + 600
    while len(seen) < WORKERS and time.monotonic() < deadline:
        r = fresh(url, "GET", "/healthz")
        if r.status_code == 200:
            seen[r.json()["pid"]] = r.json()
    assert len(seen) == WORKERS
    assert all(h["generator_loaded"] for h in seen.values())


def test_an_upload_through_one_worker_is_searchable_on_all(url: str) -> None:
    sample = REPO / "data" / "samples" / "history-of-lighthouses.md"
    r = fresh(url, "POST", "/v1/documents", files=[("file", (sample.name, sample.read_bytes()))])
    assert r.status_code == 200 and r.json()["added"] == 1, r.text
    for response in over_workers(url, "POST", "/v1/search", json={"query": "Who designed the Pharos?"}):
        assert response.json()["results"][0]["path"].endswith("history-of-lighthouses.md")


def test_an_answer_stored_by_one_worker_is_served_by_all(url: str) -> None:
    answer = fresh(url, "POST", "/v1/ask", json={"question": "Who designed the Pharos of Alexandria?"})
    assert answer.status_code == 200, answer.text
    for response in over_workers(url, "GET", f"/v1/answers/{answer.json()['id']}"):
        assert response.status_code == 200 and response.json() == answer.json()
    assert fresh(url, "GET", f"/v1/answers/{answer.json()['id']}/report").status_code == 200


def test_a_concurrent_rag_ingest_is_seen_by_every_worker(
    url: str, env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "tarnwick.md").write_text(
        "# Tarnwick Rock\n\nThe Tarnwick Rock light shows three red flashes every twenty seconds.\n"
    )
    for i in range(2):
        (tmp_path / f"gannet-{i}.md").write_text(f"Gannet Isle {i} faces the Skerrimore current.\n")
    ingest = subprocess.Popen(
        [str(BIN / "rag"), "ingest", str(tmp_path), "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    statuses: list[int] = []
    stop = threading.Event()

    def probe() -> None:
        while not stop.is_set():
            statuses.append(fresh(url, "GET", "/healthz").status_code)
            statuses.append(fresh(url, "POST", "/v1/search", json={"query": "red flashes"}).status_code)
            time.sleep(0.3)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        out, err = ingest.communicate(timeout=600)
    finally:
        stop.set()
        prober.join()
    assert ingest.returncode == 0, err.decode()
    assert json.loads(out)["added"] == 3
    assert statuses and set(statuses) == {200}
    question = {"query": "How many red flashes does the Tarnwick Rock light show?", "k": 1}
    for response in over_workers(url, "POST", "/v1/search", json=question):
        assert response.json()["results"][0]["path"] == str((tmp_path / "tarnwick.md").resolve())


def test_a_delete_through_one_worker_is_seen_by_all(url: str) -> None:
    documents = fresh(url, "GET", "/v1/documents").json()["documents"]
    target = next(d for d in documents if d["path"].endswith("tarnwick.md"))
    assert fresh(url, "DELETE", f"/v1/documents/{target['id']}").status_code == 204
    question = {"query": "How many red flashes does the Tarnwick Rock light show?", "k": 50}
    for response in over_workers(url, "POST", "/v1/search", json=question):
        assert all(r["document_id"] != target["id"] for r in response.json()["results"])


def test_metrics_add_up_every_worker(url: str) -> None:
    before = _search_count(fresh(url, "GET", "/metrics").text)
    for _ in range(6):
        assert fresh(url, "POST", "/v1/search", json={"query": "fog"}).status_code == 200
    for response in over_workers(url, "GET", "/metrics"):
        assert _search_count(response.text) >= before + 6
        assert re.search(r"^sightline_generator_loaded 1\.0$", response.text, re.MULTILINE)


def _search_count(text: str) -> float:
    found = re.search(
        r'sightline_http_requests_total\{method="POST",route="/v1/search",status="200"\} (\S+)', text
    )
    return float(found.group(1)) if found else 0.0


def test_sigterm_stops_a_running_answer_and_the_server_exits(tmp_path: Path) -> None:
    """uvicorn alone would wait for the answer to finish; the generation must end at its next token,
    the client be told why, nothing half-made be stored, and the process exit."""
    home = tmp_path / "home"
    env = {**os.environ, "RAG_HOME": str(home), "RAG_MODELS_CACHE": str(MODELS_CACHE),
           "RAG_MAX_NEW_TOKENS": "400"}
    with serving_process([str(BIN / "rag"), "serve"], env) as (base, server):
        sample = REPO / "data" / "samples" / "history-of-lighthouses.md"
        files = [("file", (sample.name, sample.read_bytes()))]
        r = httpx.post(f"{base}/v1/documents", files=files, timeout=600)
        assert r.status_code == 200, r.text
        events = []
        body = {"question": "Tell me everything about the Pharos of Alexandria.", "stream": True}
        with httpx.stream("POST", f"{base}/v1/ask", json=body, timeout=600) as response:
            for event, data in read_events(response):
                events.append((event, data))
                if event == "token" and len(events) == 2:  # sources, then the first token
                    server.send_signal(signal.SIGTERM)
        assert events[-1][0] == "error", events[-3:]
        assert events[-1][1]["status"] == 503 and "shutting down" in events[-1][1]["detail"]
        server.wait(timeout=60)
    engine = sa.create_engine(f"sqlite:///{home / 'rag.db'}")
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(AnswerRecord)).scalar() == 0
    engine.dispose()


SCHEMATHESIS_EXAMPLES = 10  # per operation and phase; ~30 s on 2 cores


def test_schemathesis_finds_no_server_error(url: str, tmp_path: Path) -> None:
    """Runs last: its fuzzing deletes documents the tests above rely on."""
    cmd = [
        str(BIN / "schemathesis"),
        "--config-file",
        str(REPO / "tests" / "schemathesis.toml"),
        "run",
        f"{url}/openapi.json",
        "--header",
        f"Authorization: Bearer {KEY}",
        "--checks",
        "all",
        "--max-examples",
        str(SCHEMATHESIS_EXAMPLES),
        "--seed",
        os.environ.get("SCHEMATHESIS_SEED", "1"),
        "--workers",
        "2",
        "--request-timeout",
        "300",
    ]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-2000:]
