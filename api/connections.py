"""How the server treats connections before a request reaches the app: uvicorn's options in one place,
and an HTTP protocol that bounds what a client can make the server hold.

uvicorn times out idle keep-alive connections but not a client that connects and then sends its
request line and headers slowly (or never): 300 such half-open connections would stay open for as
long as the clients like. Nor does it bound the URL, which httptools buffers whole: a 20 MB query
string reached the app and came back in a 422. ``GuardedHttpProtocol`` closes a connection whose
headers have not arrived within ``header_timeout_s`` and answers 414 to a URL over ``max_url_bytes``
before buffering more of it. No library or uvicorn option does either (both are callbacks of
httptools' parser, which only the protocol sees).
"""

from __future__ import annotations

import asyncio
import json
from functools import partial
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from rag.config import Settings

MAX_URL_BYTES = 8 * 1024  # path and query string together
LINGER_S = 2.0  # after a refusal, how long the rest of the request is read and dropped
GRACEFUL_SHUTDOWN_S = 3  # on SIGTERM, running requests get this long, then they are cancelled


class GuardedHttpProtocol(HttpToolsProtocol):
    def __init__(
        self, *args: Any, header_timeout_s: float, max_url_bytes: int = MAX_URL_BYTES, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout_s = header_timeout_s
        self.max_url_bytes = max_url_bytes
        self._header_timer: asyncio.TimerHandle | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_header_timer()  # each request on a kept-alive connection gets the same bound

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self.max_url_bytes and not self._refused:
            self._refuse_url()

    def on_headers_complete(self) -> None:
        self._disarm_header_timer()
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        if not self._refused:
            super().data_received(data)

    def send_400_response(self, msg: str) -> None:
        if not self._refused:  # a refusal already answered; the parser error that follows it is ours
            super().send_400_response(msg)

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def _refuse_url(self) -> None:
        """Answer 414 with a JSON detail and close: the rest of the request is never parsed. The
        parser is stopped by the exception, which uvicorn would answer with a 400 (suppressed above)."""
        self._refused = True
        self._disarm_header_timer()
        detail = f"the URL is over the {self.max_url_bytes:,}-byte limit; send long values in a JSON body"
        body = json.dumps({"detail": detail}).encode()
        self.transport.write(
            b"HTTP/1.1 414 URI Too Long\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (len(body), body)
        )
        # Lingering close: closing now, with the rest of the request unread, would send a reset that
        # can destroy the reply before the client reads it. Stop writing, discard what still arrives
        # (data_received ignores it), and close after a moment.
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)
        raise _Refused


class _Refused(Exception):
    """Stops httptools' parser after a refusal."""


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run``/``uvicorn.Config``: the same for `rag serve` and tests."""
    return {
        "http": partial(GuardedHttpProtocol, header_timeout_s=settings.header_timeout_s),
        "timeout_keep_alive": settings.keep_alive_s,
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_S,
    }
