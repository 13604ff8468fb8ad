"""A real server on a free loopback port, for tests and benchmarks that talk HTTP to it.

``LiveServer`` runs uvicorn in a thread of the calling process (cheap: one set of models); ``wait_ready``
polls /healthz of any server, e.g. one started with `rag serve` in a subprocess.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from types import TracebackType

import httpx
import uvicorn
from fastapi import FastAPI

from api.connections import uvicorn_options


def free_socket(host: str = "127.0.0.1") -> socket.socket:
    """A listening-ready socket bound to a free port (handed to uvicorn, so no other process can take
    the port between choosing and binding it)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    return sock


def free_port(host: str = "127.0.0.1") -> int:
    """A port free right now, for a server in another process (which must bind it itself)."""
    with free_socket(host) as sock:
        port: int = sock.getsockname()[1]
        return port


def wait_ready(
    url: str,
    timeout: float = 180.0,
    require_ready: bool = True,
    process: subprocess.Popen[bytes] | None = None,
) -> dict[str, object]:
    """Poll ``url``/healthz until it answers 200 (or, with ``require_ready=False``, answers at all);
    give up early if the server's ``process`` exits."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server for {url} exited with code {process.returncode}")
        try:
            r = httpx.get(f"{url}/healthz", timeout=5.0)
            body: dict[str, object] = r.json()
            if r.status_code == 200 or not require_ready:
                return body
            if body.get("status") == "error":
                raise RuntimeError(f"server at {url} failed to start: {body.get('detail')}")
            last = f"{r.status_code} {body}"
        except httpx.TransportError as exc:
            last = repr(exc)
        time.sleep(0.2)
    raise TimeoutError(f"server at {url} not ready after {timeout:.0f} s: {last}")


class LiveServer:
    """``with LiveServer(app) as url: httpx.get(url + "/healthz")``."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1") -> None:
        self.sock = free_socket(host)
        port = self.sock.getsockname()[1]
        self.url = f"http://{host}:{port}"
        options = uvicorn_options(app.state.rag.settings)
        config = uvicorn.Config(app, log_level="warning", lifespan="on", **options)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, name=f"uvicorn:{port}", daemon=True
        )

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start on {self.url}")
            time.sleep(0.05)
        return self.url

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()
