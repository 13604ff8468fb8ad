"""The REST service under faults, over real HTTP: the database going away and coming back. A
TCP relay stands between the server and PostgreSQL, so the test can cut the database off (connection
refused, and every open connection dropped) and restore it, as an outage would."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.main import create_app
from api.testing import LiveServer
from rag.config import Settings
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
