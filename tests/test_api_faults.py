"""The REST service under faults and floods, over real HTTP: the database going away and coming back
(a TCP relay stands between the server and PostgreSQL, so the test can cut it off, dropping every open
connection, and restore it, as an outage would); a flood of uploads behind one stuck on the workspace
write lock; uploads that inflate past the size limits."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.datastructures import State

from api.main import create_app
from api.testing import LiveServer
from rag.config import Settings
from rag.storage.database import Database
from rag.storage.engine import transaction
from rag.storage.orm import Document
from tests import docfactory as df
from tests.conftest import MODELS_CACHE, pg_schema

pytestmark = pytest.mark.slow


class Relay:
    """Forwards 127.0.0.1:<port> to PostgreSQL until ``cut()``; ``restore()`` listens on the same port."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = 0
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        if self.listener.fileno() != -1:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() in progress (close does not)
            self.listener.close()
        with self.lock:
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self.sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            with self.lock:
                self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def relayed(pg_available: None) -> Iterator[tuple[Relay, str]]:
    """A fresh schema's URL, pointed through a relay."""
    with pg_schema() as url:
        relay = Relay(("127.0.0.1", 5432))
        try:
            yield relay, url.replace("@127.0.0.1:5432/", f"@127.0.0.1:{relay.port}/")
        finally:
            relay.cut()


def test_a_database_outage_is_degraded_health_and_503s_then_recovers(
    relayed: tuple[Relay, str], tmp_path: Path
) -> None:
    """Cut off: data routes answer 503 with one line and Retry-After (never a generic 500), /healthz
    says degraded and why; restored: all is well again without a restart."""
    relay, url = relayed
    settings = Settings(home=tmp_path / "home", database_url=url, models_cache=MODELS_CACHE)
    app = create_app(settings, load_models=False)
    with LiveServer(app) as base, httpx.Client(base_url=base, timeout=60) as c:
        assert c.get("/healthz").json()["status"] == "ok"
        assert c.get("/v1/documents").status_code == 200
        assert c.get("/v1/answers/abc123").status_code == 404  # (its first call imports the answerer)

        relay.cut()
        for path in ("/v1/documents", "/v1/documents/1", "/v1/answers/abc123"):
            r = c.get(path)
            assert r.status_code == 503, (path, r.text)
            assert r.headers["Retry-After"] == "5"
            detail = r.json()["detail"]
            assert detail.startswith("the database is unavailable (") and "\n" not in detail, detail
            assert "connection refused" in detail.lower() or "server closed" in detail.lower(), detail
        assert c.delete("/v1/documents/1").status_code == 503
        health = wait_for_status(c, "degraded")
        assert health["ready"] is False and "the database is unavailable" in health["detail"]
        assert c.get("/metrics").status_code == 200  # without the SQL-counted gauges

        relay.restore()
        wait_for_status(c, "ok")
        assert c.get("/v1/documents").json() == {"documents": []}


def wait_for_status(client: httpx.Client, status: str, tries: int = 40) -> dict[str, object]:
    """/healthz probes the database at most once a second: poll until it reports ``status``."""
    for _ in range(tries):
        r = client.get("/healthz")
        body: dict[str, object] = r.json()
        if body["status"] == status:
            assert r.status_code == (200 if status == "ok" else 503)
            return body
        time.sleep(0.25)
    raise AssertionError(f"/healthz never said {status!r}: {body}")


QUEUE = 8  # max_queued_writes of the SQLite server below
SERVICES: dict[Path, State] = {}  # the SQLite server's app state, by home, to break it on purpose


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A server on SQLite with the embedder warm (one upload, one search) and small size limits."""
    home = tmp_path_factory.mktemp("faults") / "home"
    settings = Settings(home=home, models_cache=MODELS_CACHE, max_queued_writes=QUEUE, max_file_chars=200_000)
    app = create_app(settings, load_models=False)
    SERVICES[home] = app.state
    with LiveServer(app) as base:
        note = b"# Keepers\n\nThe keeper lit the lamp at dusk and wound the clockwork.\n"
        r = httpx.post(f"{base}/v1/documents", files=[("file", ("keepers.md", note))], timeout=600)
        assert r.status_code == 200 and r.json()["added"] == 1, r.text
        assert httpx.post(f"{base}/v1/search", json={"query": "keeper"}, timeout=600).status_code == 200
        yield base, home


def _flood(base: str, name: str, n: int, results: list[httpx.Response]) -> None:
    """``n`` concurrent small uploads (distinct content), from an event loop of their own."""

    async def run() -> None:
        limits = httpx.Limits(max_connections=n + 8, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=base, timeout=300, limits=limits) as c:
            uploads = [
                c.post(
                    "/v1/documents",
                    files=[("file", (f"{name}-{i}.md", f"# {name} {i}\n\n{name} {i} rings.".encode()))],
                )
                for i in range(n)
            ]
            results.extend(await asyncio.gather(*uploads))

    asyncio.run(run())


def test_a_flood_of_uploads_behind_a_stuck_one_leaves_every_route_answering(
    sqlite_server: tuple[str, Path],
) -> None:
    """Another writer holds the workspace (as a long `rag ingest` would): one upload waits for it and
    60 more arrive. /healthz and /v1/search keep answering within a second throughout; uploads past
    the queue get 503 with Retry-After at once; the queued ones complete once the writer is done."""
    base, home = sqlite_server
    lock = os.open(home / "write.lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(lock, fcntl.LOCK_EX)  # flock is per open file: this blocks the server's writer too
    stuck: list[httpx.Response] = []
    flooded: list[httpx.Response] = []
    threads = [
        threading.Thread(target=_flood, args=(base, "bell", 1, stuck)),
        threading.Thread(target=_flood, args=(base, "buoy", 60, flooded)),
    ]
    try:
        threads[0].start()
        time.sleep(0.5)
        threads[1].start()
        time.sleep(1.0)
        worst = 0.0
        with httpx.Client(base_url=base, timeout=30) as c:
            for _ in range(5):
                for method, path, body in (
                    ("GET", "/healthz", None),
                    ("POST", "/v1/search", {"query": "lamp"}),
                ):
                    started = time.monotonic()
                    r = c.request(method, path, json=body)
                    worst = max(worst, time.monotonic() - started)
                    assert r.status_code == 200, (path, r.text)
                time.sleep(0.2)
        assert worst < 1.0, f"a route took {worst:.2f} s during the flood"
        assert threads[1].is_alive() or len(flooded) == 60
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        os.close(lock)
        for t in threads:
            t.join(timeout=300)
    assert stuck[0].status_code == 200 and stuck[0].json()["added"] == 1, stuck[0].text
    codes = sorted(r.status_code for r in flooded)
    assert set(codes) <= {200, 503}, codes
    busy = [r for r in flooded if r.status_code == 503]
    assert len(busy) >= 60 - QUEUE, codes  # the stuck one holds a place in the queue too
    assert all(r.headers.get("Retry-After") == "5" and r.json()["detail"].startswith("busy: ") for r in busy)
    assert all(r.json()["added"] == 1 for r in flooded if r.status_code == 200)


def test_an_upload_that_inflates_past_the_limit_fails_alone(
    sqlite_server: tuple[str, Path], tmp_path: Path
) -> None:
    base, _ = sqlite_server
    bomb = df.make_docx_text_bomb(tmp_path / "inflating.docx", 1_000_000).read_bytes()
    files = [
        ("file", ("inflating.docx", bomb)),
        ("file", ("fine.md", b"# Fine\n\nThe fog signal sounded twice.")),
    ]
    r = httpx.post(f"{base}/v1/documents", files=files, timeout=300)
    assert r.status_code == 200, r.text
    summary = r.json()
    assert [u["status"] for u in summary["uploaded"]] == ["failed", "ok"]
    assert summary["failed"][0]["error"] == (
        "the file's text is 1,000,000 characters once extracted, over the 200,000-character limit "
        "(max_file_chars)"
    )


def test_an_upload_whose_ingest_fails_leaves_no_file_behind(
    sqlite_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, home = sqlite_server
    before = sorted((home / "uploads").iterdir())

    def broken_ingest(*_: object, **__: object) -> None:
        raise RuntimeError("the ingest died")

    monkeypatch.setattr(SERVICES[home].rag, "ingest", broken_ingest)
    r = httpx.post(f"{base}/v1/documents", files=[("file", ("doomed.md", b"# Doomed\n\nNever indexed."))])
    assert r.status_code == 500
    assert sorted((home / "uploads").iterdir()) == before


def test_leftover_uploads_are_cleared_at_start(tmp_path: Path) -> None:
    """A file whose ingest was killed before its row was written, and a half-written upload, are
    removed when the server starts; a file with a document row stays."""
    settings = Settings(home=tmp_path / "home", models_cache=MODELS_CACHE)
    uploads = settings.uploads_dir
    uploads.mkdir(parents=True)
    kept = df.make_document(uploads / "0123456789abcdef-kept.md", "# Kept\n\nIt has a row.")
    orphan = df.make_document(uploads / "fedcba9876543210-orphan.md", "# Orphan\n\nIts ingest was killed.")
    partial = uploads / ".upload-0a1b2c.part"
    partial.write_bytes(b"half of a fi")
    db = Database(settings)
    with transaction(db.sessions) as s:
        s.add(
            Document(path=str(kept), sha256="0" * 64, size=1, mtime=0.0, mime="text/markdown", doc_type="md")
        )
    db.close()
    with LiveServer(create_app(settings, load_models=False)):
        deadline = time.monotonic() + 30
        while (orphan.exists() or partial.exists()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sorted(uploads.iterdir()) == [kept]
