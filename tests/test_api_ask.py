"""The generator's endpoints over real HTTP: ask (JSON and server-sent events), stored answers and their
reports, attribution, and a service that keeps answering while it generates. One server with the
generator loaded (uvicorn in a thread, SQLite, short answers) for the module."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from api.main import create_app
from api.testing import LiveServer, wait_ready
from rag.config import Settings
from tests.conftest import MODELS_CACHE
from tests.factories import MADE_UP
from tests.streams import events_of, read_events

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
PHAROS = "Who designed the Pharos of Alexandria?"


PING_S = 0.2  # keep-alive comments on silent streams this often (15 s by default)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    home = tmp_path_factory.mktemp("api-ask") / "home"
    settings = Settings(home=home, models_cache=MODELS_CACHE, max_new_tokens=24, top_k=2, sse_ping_s=PING_S)
    return create_app(settings)


@pytest.fixture(scope="module")
def url(app: FastAPI) -> Iterator[str]:
    with LiveServer(app) as base:
        health = wait_ready(base, timeout=900)
        assert health["generator_loaded"] is True
        sample = REPO / "data" / "samples" / "history-of-lighthouses.md"
        r = httpx.post(
            f"{base}/v1/documents", files=[("file", (sample.name, sample.read_bytes()))], timeout=600
        )
        assert r.status_code == 200 and r.json()["added"] == 1, r.text
        yield base


@pytest.fixture(scope="module")
def client(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=600) as c:
        yield c


@pytest.fixture(scope="module")
def pharos(client: httpx.Client) -> dict[str, Any]:
    r = client.post("/v1/ask", json={"question": PHAROS})
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


def test_ask_returns_an_answer_with_sources_and_timings(pharos: dict[str, Any]) -> None:
    assert set(pharos) >= {"id", "question", "answer", "created_at", "model", "sources", "sentences"}
    assert set(pharos) >= {"hallucination", "timings"}
    assert pharos["question"] == PHAROS and pharos["answer"].strip()
    assert pharos["sources"] and pharos["sources"][0]["path"].endswith("history-of-lighthouses.md")
    assert set(pharos["model"]) == {"generator", "embedder", "decoding"}
    assert pharos["model"]["decoding"] == "greedy"
    assert set(pharos["timings"]) == {"retrieve_ms", "prefill_ms", "decode_ms", "attribute_ms", "total_ms"}
    assert set(pharos["hallucination"]) == {"risk", "flagged", "method", "threshold"}
    if not pharos["abstained"]:
        masses = [s["attention_mass"] for s in pharos["sources"]]
        assert sum(masses) == pytest.approx(1.0, abs=1e-3)


def test_a_stored_answer_and_its_report_can_be_fetched(client: httpx.Client, pharos: dict[str, Any]) -> None:
    again = client.get(f"/v1/answers/{pharos['id']}")
    assert again.status_code == 200 and again.json() == pharos
    report = client.get(f"/v1/answers/{pharos['id']}/report")
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/html")
    assert "<html" in report.text.lower() and "Pharos" in report.text


def test_a_guided_ask_is_answered_and_stored_as_guided(client: httpx.Client) -> None:
    r = client.post("/v1/ask", json={"question": PHAROS, "guided": True})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["model"]["decoding"] == "guided" and answer["answer"].strip()
    assert client.get(f"/v1/answers/{answer['id']}").json() == answer
    wrong = client.post("/v1/ask", json={"question": PHAROS, "guided": "yes"})  # strict: a bool or null
    assert wrong.status_code == 422 and "guided" in wrong.text


def test_stream_sends_sources_then_tokens_then_the_answer(client: httpx.Client) -> None:
    with client.stream("POST", "/v1/ask", json={"question": PHAROS, "stream": True}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = list(read_events(r))
    names = [e for e, _ in events]
    assert names[0] == "sources" and names[-1] == "done", names
    assert set(names[1:-1]) == {"token"}, names
    sources, done = events[0][1]["sources"], events[-1][1]
    assert [s["chunk_id"] for s in sources] == [s["chunk_id"] for s in done["sources"]]
    streamed = "".join(data["text"] for e, data in events if e == "token").strip()
    assert streamed in (done["answer"].strip(), (done["draft"] or "").strip())
    assert client.get(f"/v1/answers/{done['id']}").json() == done


def test_a_stream_queued_behind_a_long_generation_is_kept_alive(app: FastAPI, url: str) -> None:
    """While every generation thread is busy (held here by a job the test ends, as a long answer would
    hold it), a queued stream sends keep-alive comments, so that a proxy's idle timeout does not cut
    it; once a thread is free it answers as any stream does."""
    state = app.state
    release = threading.Event()
    for _ in range(state.rag.settings.batch_max):
        state.executors.generation.submit(release.wait)
    try:
        # a read timeout far above PING_S: without keep-alives the stream would stay silent
        timeout = httpx.Timeout(600, read=60)
        with httpx.stream("POST", f"{url}/v1/ask", json={"question": PHAROS, "stream": True},
                          timeout=timeout) as r:
            assert r.status_code == 200, r.read()
            lines = r.iter_lines()
            assert next(line for line in lines if line) == ": ping"
            release.set()
            names = [name for name, _ in events_of(lines)]
    finally:
        release.set()
    assert names[0] == "sources" and names[-1] == "done", names


def test_health_metrics_and_search_answer_while_an_answer_streams(client: httpx.Client, url: str) -> None:
    first_event = threading.Event()
    finished = threading.Event()

    def stream() -> list[str]:
        question = "Describe each of the four Eddystone lighthouses and what happened to it."
        with httpx.stream(
            "POST", f"{url}/v1/ask", json={"question": question, "stream": True}, timeout=600
        ) as r:
            names = []
            for name, _ in read_events(r):
                names.append(name)
                first_event.set()
        finished.set()
        return names

    with ThreadPoolExecutor(1) as pool:
        streaming = pool.submit(stream)
        assert first_event.wait(600)
        answered_mid_stream: set[str] = set()
        while not finished.is_set():  # generation runs on its own thread: nothing here waits for it
            for method, path, body in (
                ("GET", "/healthz", None),
                ("GET", "/metrics", None),
                ("POST", "/v1/search", {"query": "fog signals", "k": 1}),
            ):
                r = client.request(method, path, json=body)
                assert r.status_code == 200, r.text
                if not finished.is_set():
                    answered_mid_stream.add(path)
        assert streaming.result()[-1] == "done"
    # each answered while the answer was still streaming (latency under load: `python -m bench load`)
    assert answered_mid_stream == {"/healthz", "/metrics", "/v1/search"}


def test_concurrent_asks_get_the_answer_a_lone_ask_gets(client: httpx.Client, pharos: dict[str, Any]) -> None:
    """Greedy decoding is deterministic: if concurrent requests shared or corrupted a KV cache, the
    answers or their attention would differ."""
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: client.post("/v1/ask", json={"question": PHAROS}), range(2)))
    for r in results:
        assert r.status_code == 200, r.text
        answer = r.json()
        assert answer["answer"] == pharos["answer"] and answer["id"] != pharos["id"]
        masses = [s["attention_mass"] for s in answer["sources"]]
        assert masses == pytest.approx([s["attention_mass"] for s in pharos["sources"]], abs=1e-4)


def test_asks_whose_clients_left_stop_and_are_not_stored(client: httpx.Client, url: str) -> None:
    """Three clients give up after 0.3 s; their generations must stop rather than hold the decoder,
    so the ask after them is the only new stored answer, and /metrics counts the three as 499."""
    before = client.get("/v1/answers").json()["total"]
    for _ in range(3):
        with pytest.raises(httpx.TimeoutException):
            httpx.post(f"{url}/v1/ask", json={"question": PHAROS}, timeout=0.3)
    r = client.post("/v1/ask", json={"question": PHAROS})
    assert r.status_code == 200, r.text
    assert client.get("/v1/answers").json()["total"] == before + 1
    metrics = client.get("/metrics").text
    assert 'sightline_http_requests_total{method="POST",route="/v1/ask",status="499"} 3.0' in metrics


def test_upload_then_a_question_is_answered_from_it(client: httpx.Client) -> None:
    r = client.post("/v1/documents", files=[("file", ("varnholm.md", MADE_UP.encode()))])
    assert r.status_code == 200, r.text
    document_id = r.json()["uploaded"][0]["document_id"]
    question = "Who was the keeper of the Varnholm light from 1911 to 1934?"
    answer = client.post("/v1/ask", json={"question": question}).json()
    assert answer["sources"][0]["document_id"] == document_id
    assert answer["sources"][0]["attention_mass"] > 0.5
    # that the answer names the keeper is the default generator's test (test_default_generator.py)


def test_attribute_an_answer_written_elsewhere(client: httpx.Client, pharos: dict[str, Any]) -> None:
    chunk_ids = [s["chunk_id"] for s in pharos["sources"]]
    given = {"question": PHAROS, "answer": "The Pharos was designed by Sostratus of Cnidus."}
    by_chunks = client.post("/v1/attribute", json={**given, "chunk_ids": chunk_ids})
    assert by_chunks.status_code == 200, by_chunks.text
    body = by_chunks.json()
    assert set(body) == {"sources", "sentences", "hallucination", "attention_sink"}
    assert [s["chunk_id"] for s in body["sources"]] == chunk_ids
    assert sum(s["attention_mass"] for s in body["sources"]) == pytest.approx(1.0, abs=1e-3)
    assert body["sentences"] and body["sentences"][0]["text"].startswith("The Pharos")

    context = pharos["sources"][0]["text"]
    by_context = client.post("/v1/attribute", json={**given, "context": context})
    assert by_context.status_code == 200 and len(by_context.json()["sources"]) == 1
    by_retrieval = client.post("/v1/attribute", json=given)
    assert by_retrieval.status_code == 200 and by_retrieval.json()["sources"]


@pytest.mark.parametrize(
    "body",
    [
        {"question": PHAROS, "answer": "Sostratus.", "chunk_ids": [987654]},
        {"question": "7" * 2000, "answer": "Sostratus."},
        {"question": PHAROS, "answer": "9" * 2000},
        {"question": PHAROS, "answer": "Sostratus.", "context": "8" * 8000},
    ],
    ids=["unknown chunk", "question too many tokens", "answer too many tokens", "context too many tokens"],
)
def test_attribute_bad_input_is_422(client: httpx.Client, body: dict[str, Any]) -> None:
    r = client.post("/v1/attribute", json=body)
    assert r.status_code == 422 and isinstance(r.json()["detail"], str), r.text


def test_a_question_of_too_many_tokens_is_422(client: httpx.Client) -> None:
    r = client.post("/v1/ask", json={"question": "4" * 3000})  # under 4,000 characters, 3,000 tokens
    assert r.status_code == 422 and "tokens" in r.json()["detail"]
    streamed = client.post("/v1/ask", json={"question": "4" * 3000, "stream": True})
    assert streamed.status_code == 422  # refused before the stream begins


def test_metrics_show_answer_stages_and_the_loaded_model(client: httpx.Client) -> None:
    text = client.get("/metrics").text
    assert 'sightline_answer_stage_seconds_count{stage="decode"}' in text
    assert "sightline_generator_loaded 1.0" in text
    assert 'sightline_prompt_cache_total{cache="prefix",result="hit"}' in text  # every ask reuses it
    assert 'status="500"' not in text
