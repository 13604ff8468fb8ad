"""The REST service over real HTTP, without the generator: auth, search, documents, uploads, bad input,
metrics, and a `rag ingest` running beside the server. One server (uvicorn in a thread, SQLite) for the
module; the generator's endpoints are in test_api_ask.py."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.main import create_app
from api.testing import LiveServer
from rag.config import Settings
from tests.conftest import MODELS_CACHE

pytestmark = pytest.mark.slow  # spawns `rag serve` and loads the embedder

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "data" / "samples"
KEYS = ("first-key", "second-key")
AUTH = {"Authorization": f"Bearer {KEYS[1]}"}
UPLOAD_LIMIT = 256 * 1024
CORPUS = ["history-of-lighthouses.md", "light-characteristics.txt", "keepers-lives.pdf"]

# every /v1 operation with a path that exists
V1_ROUTES = [
    ("POST", "/v1/ask"),
    ("POST", "/v1/attribute"),
    ("POST", "/v1/search"),
    ("GET", "/v1/answers"),
    ("GET", "/v1/answers/0123abcd"),
    ("GET", "/v1/answers/0123abcd/report"),
    ("POST", "/v1/documents"),
    ("GET", "/v1/documents"),
    ("GET", "/v1/documents/1"),
    ("DELETE", "/v1/documents/999999"),
]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("api") / "home"


@pytest.fixture(scope="module")
def url(home: Path) -> Iterator[str]:
    settings = Settings(
        home=home, models_cache=MODELS_CACHE, api_keys=",".join(KEYS), max_upload_bytes=UPLOAD_LIMIT
    )
    with LiveServer(create_app(settings, load_models=False)) as base:
        files = [("file", (name, (SAMPLES / name).read_bytes())) for name in CORPUS]
        r = httpx.post(f"{base}/v1/documents", files=files, headers=AUTH, timeout=600)
        assert r.status_code == 200, r.text
        assert r.json()["added"] == len(CORPUS) and r.json()["failed"] == []
        yield base


@pytest.fixture
def client(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, headers=AUTH, timeout=300) as c:
        yield c


def search(client: httpx.Client, query: str, **extra: Any) -> list[dict[str, Any]]:
    r = client.post("/v1/search", json={"query": query, **extra})
    assert r.status_code == 200, r.text
    results: list[dict[str, Any]] = r.json()["results"]
    return results


def upload(client: httpx.Client, name: str, content: bytes) -> dict[str, Any]:
    r = client.post("/v1/documents", files=[("file", (name, content))])
    assert r.status_code == 200, r.text
    summary: dict[str, Any] = r.json()
    return summary


def test_healthz_and_metrics_need_no_key(url: str) -> None:
    health = httpx.get(f"{url}/healthz")
    assert health.status_code == 200
    assert health.json()["status"] == "ok" and health.json()["generator_loaded"] is False
    metrics = httpx.get(f"{url}/metrics")
    assert metrics.status_code == 200 and "sightline_index_chunks" in metrics.text


def test_openapi_describes_every_endpoint(url: str) -> None:
    spec = httpx.get(f"{url}/openapi.json").json()
    operations = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    assert operations == {
        ("POST", "/v1/ask"),
        ("POST", "/v1/attribute"),
        ("POST", "/v1/search"),
        ("GET", "/v1/answers"),
        ("GET", "/v1/answers/{answer_id}"),
        ("GET", "/v1/answers/{answer_id}/report"),
        ("POST", "/v1/documents"),
        ("GET", "/v1/documents"),
        ("GET", "/v1/documents/{document_id}"),
        ("DELETE", "/v1/documents/{document_id}"),
        ("GET", "/healthz"),
        ("GET", "/metrics"),
    }
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    answer = spec["components"]["schemas"]["Answer"]["properties"]
    assert {"id", "question", "answer", "created_at", "model", "sources", "sentences"} <= set(answer)
    assert {"hallucination", "timings"} <= set(answer)
    ask = spec["paths"]["/v1/ask"]["post"]["responses"]["200"]["content"]
    assert {"application/json", "text/event-stream"} <= set(ask)
    uploaded = spec["components"]["schemas"]["UploadedOut"]["properties"]["status"]
    assert uploaded["enum"] == ["ok", "failed", "duplicate"] and "duplicate" in uploaded["description"]
    assert "duplicates" in spec["components"]["schemas"]["IngestSummaryOut"]["properties"]


@pytest.mark.parametrize(("method", "path"), V1_ROUTES)
def test_every_v1_route_needs_a_valid_key(url: str, method: str, path: str) -> None:
    wrong = [{}, {"Authorization": "Bearer nope"}, {"Authorization": f"Basic {KEYS[0]}"}]
    wrong += [{"Authorization": "Bearer"}, {"Authorization": f"Bearer {KEYS[0]}x"}]
    for headers in wrong:
        r = httpx.request(method, url + path, headers=headers, json={})
        assert r.status_code == 401, (headers, r.text)
        assert r.headers["www-authenticate"] == "Bearer" and "detail" in r.json()
    for key in KEYS:  # either configured key works; a body that fails validation is a 422, not a 401
        r = httpx.request(method, url + path, headers={"Authorization": f"Bearer {key}"}, json={})
        assert r.status_code != 401, r.text


def test_an_unauthenticated_upload_is_refused_before_it_is_read(url: str) -> None:
    r = httpx.post(f"{url}/v1/documents", files=[("file", ("big.txt", b"x" * (4 * UPLOAD_LIMIT)))])
    assert r.status_code == 401


def test_search_finds_the_document_that_answers(client: httpx.Client) -> None:
    results = search(client, "Who designed the Pharos of Alexandria?", k=3)
    assert len(results) == 3
    assert results[0]["path"].endswith("history-of-lighthouses.md")
    assert "Sostratus" in results[0]["text"]
    assert [r["rank"] for r in results] == [1, 2, 3]
    top = search(client, "Which relief vessel found the Flannan Isles lighthouse deserted?", k=1)[0]
    assert top["path"].endswith("keepers-lives.pdf") and top["page"] == 3


def test_search_filters(client: httpx.Client) -> None:
    question = "How far can a light be seen at night?"
    only_txt = search(client, question, k=5, filters={"doc_type": "txt"})
    assert only_txt and all(r["doc_type"] == "txt" for r in only_txt)
    assert search(client, question, filters={"doc_type": "docx"}) == []
    one = only_txt[0]["path"]
    assert all(r["path"] == one for r in search(client, question, k=5, filters={"path_prefix": one}))
    assert search(client, question, k=5, filters={"path_prefix": one.upper()}) == []  # case-sensitive


def test_upload_then_search_finds_it_and_a_reupload_is_unchanged(client: httpx.Client, home: Path) -> None:
    text = b"# Quillon Point\n\nThe Quillon Point light was kept by Marisol Ebbesen, who painted it teal.\n"
    summary = upload(client, "quillon.md", text)
    assert (summary["added"], summary["updated"], summary["unchanged"]) == (1, 0, 0)
    assert set(summary) >= {"added", "updated", "unchanged", "deleted", "failed", "documents", "chunks"}
    [uploaded] = summary["uploaded"]
    assert uploaded["filename"] == "quillon.md" and uploaded["status"] == "ok"
    doc = client.get(f"/v1/documents/{uploaded['document_id']}").json()
    assert doc["path"] == uploaded["path"] and doc["chunks"] >= 1 and doc["doc_type"] == "md"
    assert any(d["id"] == doc["id"] for d in client.get("/v1/documents").json()["documents"])
    top = search(client, "Who kept the Quillon Point light?", k=1)[0]
    assert top["document_id"] == doc["id"] and "Marisol Ebbesen" in top["text"]

    again = upload(client, "quillon.md", text)
    assert (again["added"], again["unchanged"]) == (0, 1)
    assert again["uploaded"][0]["document_id"] == doc["id"]


def test_the_same_content_under_another_name_is_a_duplicate_and_not_kept(
    client: httpx.Client, home: Path
) -> None:
    text = b"The Orrisdale light was tended by two sisters who kept a log in Manx.\n"
    first = upload(client, "orrisdale.txt", text)["uploaded"][0]
    uploads = sorted((home / "uploads").iterdir())

    summary = upload(client, "orrisdale-copy.txt", text)
    [copy] = summary["uploaded"]
    assert (copy["status"], copy["document_id"]) == ("duplicate", first["document_id"])
    assert summary["duplicates"] == [
        {"path": copy["path"], "document_id": first["document_id"], "of_path": first["path"]}
    ]
    assert (summary["added"], summary["failed"]) == (0, [])
    assert sorted((home / "uploads").iterdir()) == uploads and not Path(copy["path"]).exists()
    paths = [d["path"] for d in client.get("/v1/documents").json()["documents"]]
    assert first["path"] in paths and copy["path"] not in paths

    same = b"# Tarbat\n\nTarbat Ness light is striped red and white.\n"
    r = client.post("/v1/documents", files=[("file", ("tarbat.md", same)), ("file", ("ness.md", same))])
    assert r.status_code == 200, r.text
    one, other = r.json()["uploaded"]  # in one request: the first is ingested, the second is its duplicate
    assert (one["status"], other["status"], r.json()["added"]) == ("ok", "duplicate", 1)
    assert other["document_id"] == one["document_id"]
    assert Path(one["path"]).exists() and not Path(other["path"]).exists()


def test_uploads_are_stored_under_generated_names(client: httpx.Client, home: Path) -> None:
    uploads = (home / "uploads").resolve()
    summary = upload(client, "../../../etc/..\\evil name;rm -rf.TXT", b"Harbour lights of Kestrel Cove.\n")
    path = Path(summary["uploaded"][0]["path"])
    assert path.parent == uploads and path.exists()
    assert re.fullmatch(r"[0-9a-f]{16}-evil-name-rm--rf\.txt", path.name), path.name
    assert summary["uploaded"][0]["filename"] == "evil name;rm -rf.TXT"
    assert not any(p.name.endswith(".part") for p in uploads.iterdir())


def test_a_failed_file_is_reported_not_fatal(client: httpx.Client) -> None:
    summary = upload(client, "broken.pdf", b"%PDF-1.4 this is not really a pdf")
    [failure] = summary["failed"]
    assert summary["uploaded"][0]["status"] == "failed" and failure["path"] == summary["uploaded"][0]["path"]
    assert failure["error"]


def test_delete_removes_the_document_from_search(client: httpx.Client) -> None:
    text = b"The Vossgrund beacon burns whale oil mixed with juniper resin every winter solstice.\n"
    uploaded = upload(client, "vossgrund.txt", text)["uploaded"][0]
    question = "What does the Vossgrund beacon burn?"
    hits = search(client, question, k=5)
    chunk_ids = {h["chunk_id"] for h in hits if h["document_id"] == uploaded["document_id"]}
    assert chunk_ids

    assert client.delete(f"/v1/documents/{uploaded['document_id']}").status_code == 204
    after = search(client, question, k=50)
    assert not chunk_ids & {h["chunk_id"] for h in after}
    assert all(h["document_id"] != uploaded["document_id"] for h in after)
    assert client.get(f"/v1/documents/{uploaded['document_id']}").status_code == 404
    assert client.delete(f"/v1/documents/{uploaded['document_id']}").status_code == 404
    assert not Path(uploaded["path"]).exists()


def _multipart_stream(size: int) -> Iterator[bytes]:
    """A valid multipart body sent chunked (no Content-Length), so only counting can stop it."""
    yield b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="big.txt"\r\n\r\n'
    for _ in range(size // 65536):
        yield b"x" * 65536
    yield b"\r\n--b0undary--\r\n"


_LONG = "x" * 4001
BAD_INPUT: list[tuple[str, str, dict[str, Any], int]] = [
    ("POST", "/v1/search", {"json": {}}, 422),
    ("POST", "/v1/search", {"json": {"query": ""}}, 422),
    ("POST", "/v1/search", {"json": {"query": "  \n "}}, 422),
    ("POST", "/v1/search", {"json": {"query": _LONG}}, 422),
    ("POST", "/v1/search", {"json": {"query": "ok", "k": 0}}, 422),
    ("POST", "/v1/search", {"json": {"query": "ok", "k": 51}}, 422),
    ("POST", "/v1/search", {"json": {"query": "ok", "k": "three"}}, 422),
    ("POST", "/v1/search", {"json": {"query": "ok", "kk": 3}}, 422),
    ("POST", "/v1/search", {"json": {"query": "a\x00b"}}, 422),
    ("POST", "/v1/search", {"json": {"query": "ok", "filters": {"doc_type": "x" * 17}}}, 422),
    ("POST", "/v1/search", {"json": {"query": "ok", "filters": {"path_prefix": "/a\x00"}}}, 422),
    ("POST", "/v1/search", {"json": {"query": "ok", "mode": "psychic"}}, 422),
    ("POST", "/v1/search", {"json": ["query"]}, 422),
    (
        "POST",
        "/v1/search",
        {"content": b'{"query": "unclosed', "headers": {"content-type": "application/json"}},
        422,
    ),
    (
        "POST",
        "/v1/search",
        {"content": b'{"query": "\xff\xfe"}', "headers": {"content-type": "application/json"}},
        400,
    ),
    ("POST", "/v1/search", {"content": b"query=lights", "headers": {"content-type": "text/plain"}}, 422),
    ("POST", "/v1/ask", {"json": {"question": ""}}, 422),
    ("POST", "/v1/ask", {"json": {"question": _LONG}}, 422),
    ("POST", "/v1/ask", {"json": {"question": "ok", "k": 99}}, 422),
    ("POST", "/v1/ask", {"json": {"question": "ok", "stream": "maybe"}}, 422),
    (
        "POST",
        "/v1/ask",
        {"content": b'{"question": "\\ud800"}', "headers": {"content-type": "application/json"}},
        422,
    ),
    ("POST", "/v1/attribute", {"json": {"question": "q", "answer": ""}}, 422),
    (
        "POST",
        "/v1/attribute",
        {"json": {"question": "q", "answer": "a", "context": "c", "chunk_ids": [1]}},
        422,
    ),
    ("POST", "/v1/attribute", {"json": {"question": "q", "answer": "a", "chunk_ids": []}}, 422),
    ("POST", "/v1/attribute", {"json": {"question": "q", "answer": "a", "chunk_ids": [0]}}, 422),
    ("POST", "/v1/attribute", {"json": {"question": "q", "answer": "a", "chunk_ids": [2**40]}}, 422),
    ("GET", "/v1/documents/0", {}, 422),
    ("GET", "/v1/documents/abc", {}, 422),
    ("GET", "/v1/documents/99999999999", {}, 422),
    ("GET", "/v1/documents/424242", {}, 404),
    ("DELETE", "/v1/documents/424242", {}, 404),
    ("GET", "/v1/answers/0123456789abcdef0123456789abcdef", {}, 404),
    ("GET", "/v1/answers/0123456789abcdef0123456789abcdef/report", {}, 404),
    ("GET", "/v1/answers/not%20an%20id", {}, 422),
    ("GET", "/v1/answers/" + "a" * 65, {}, 422),
    ("POST", "/v1/documents", {"json": {"file": "x.txt"}}, 422),
    ("POST", "/v1/documents", {"data": {"other": "field"}, "files": [("nofile", ("a.txt", b"a"))]}, 422),
    ("POST", "/v1/documents", {"files": [("file", ("tool.exe", b"MZ"))]}, 415),
    ("POST", "/v1/documents", {"files": [("file", ("README", b"hello"))]}, 415),
    ("POST", "/v1/documents", {"files": [("file", ("a.txt", b"ok")), ("file", ("b.bin", b"x"))]}, 415),
    ("POST", "/v1/documents", {"files": [("file", ("big.txt", b"x" * (UPLOAD_LIMIT + 1)))]}, 413),
    ("POST", "/v1/documents", {"files": [("file", ("huge.txt", b"x" * (2 * UPLOAD_LIMIT)))]}, 413),
    (
        "POST",
        "/v1/documents",
        {
            "content": _multipart_stream(2 * UPLOAD_LIMIT),
            "headers": {"content-type": "multipart/form-data; boundary=b0undary"},
        },
        413,
    ),
    ("GET", "/v1/nothing-here", {}, 404),
    ("PUT", "/v1/search", {"json": {"query": "ok"}}, 405),
]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"), BAD_INPUT, ids=[f"{m} {p[:40]} {s}" for m, p, _, s in BAD_INPUT]
)
def test_bad_input_is_a_json_4xx(
    client: httpx.Client,
    caplog: pytest.LogCaptureFixture,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
) -> None:
    caplog.set_level(logging.ERROR, logger="sightline.api")
    r = client.request(method, path, **kwargs)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json" and "detail" in r.json()
    assert not caplog.records  # the server-error handler never ran


def test_rejected_uploads_leave_nothing_behind(client: httpx.Client, home: Path) -> None:
    before = sorted((home / "uploads").iterdir())
    r = client.post(
        "/v1/documents", files=[("file", ("a.txt", b"fine")), ("file", ("b.txt", b"y" * UPLOAD_LIMIT))]
    )
    assert r.status_code == 413
    assert sorted((home / "uploads").iterdir()) == before


def test_metrics_count_requests_per_route(client: httpx.Client, url: str) -> None:
    search(client, "fog")
    text = httpx.get(f"{url}/metrics").text
    ok = re.search(
        r'sightline_http_requests_total\{method="POST",route="/v1/search",status="200"\} (\S+)', text
    )
    assert ok and float(ok.group(1)) >= 1
    assert 'route="/v1/documents/{document_id}",status="404"' in text
    assert re.search(
        r'sightline_http_request_duration_seconds_count\{method="POST",route="/v1/search"\}', text
    )
    chunks = re.search(r"^sightline_index_chunks (\S+)$", text, re.MULTILINE)
    assert chunks and float(chunks.group(1)) > 0
    assert re.search(r"^sightline_generator_loaded 0\.0$", text, re.MULTILINE)
    assert 'status="500"' not in text


def test_a_concurrent_rag_ingest_is_picked_up_without_restart(
    client: httpx.Client, url: str, home: Path, tmp_path: Path
) -> None:
    """A `rag ingest` in another process writes SQL and saves the index while the API keeps answering;
    afterwards the API searches the new documents."""
    folder = tmp_path / "more"
    folder.mkdir()
    for i in range(3):
        (folder / f"isle-{i}.md").write_text(f"# Isle {i}\n\nGannet Isle {i} faces the Skerrimore current.\n")
    (folder / "target.md").write_text(
        "The Tarnwick Rock light shows three red flashes every twenty seconds.\n"
    )
    env = {**os.environ, "RAG_MODELS_CACHE": str(MODELS_CACHE)}
    rag = Path(sys.executable).parent / "rag"
    cmd = [str(rag), "ingest", str(folder), "--home", str(home), "--json"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    statuses: list[int] = []
    stop = threading.Event()

    def probe() -> None:
        with httpx.Client(base_url=url, headers=AUTH, timeout=60) as c:
            while not stop.is_set():
                statuses.append(c.get("/healthz").status_code)
                statuses.append(c.post("/v1/search", json={"query": "Which light flashes red?"}).status_code)
                time.sleep(0.3)  # a steady trickle: enough to catch a stall, not enough to starve ingest

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        out, err = proc.communicate(timeout=600)
    finally:
        stop.set()
        prober.join()
    assert proc.returncode == 0, err.decode()
    assert json.loads(out)["added"] == 4
    assert statuses and set(statuses) == {200}  # (its latency under load: `python -m bench load`)
    top = search(client, "How many red flashes does the Tarnwick Rock light show?", k=1)[0]
    assert top["path"] == str((folder / "target.md").resolve())
    paths = {d["path"] for d in client.get("/v1/documents").json()["documents"]}
    assert str((folder / "isle-2.md").resolve()) in paths


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/v1/documents", "GET, POST"),
        ("PATCH", "/v1/documents/1", "DELETE, GET"),
        ("GET", "/v1/search", "POST"),
        ("POST", "/healthz", "GET"),
    ],
)
def test_a_405_lists_every_method_of_the_path(
    client: httpx.Client, method: str, path: str, allow: str
) -> None:
    r = client.request(method, path)
    assert (r.status_code, r.headers["Allow"]) == (405, allow)
    assert r.json() == {"detail": "Method Not Allowed"}
