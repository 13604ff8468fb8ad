"""Checks that must run before FastAPI reads a request body: the API key and the body size.

Both are plain ASGI middleware because FastAPI parses the body (JSON or multipart) before it runs
route dependencies: an unauthenticated or oversized upload must be refused without being read.
"""

from __future__ import annotations

import hmac

from fastapi import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class ApiKeyAuth:
    """401 for calls under ``prefix`` without ``Authorization: Bearer <key>`` naming a configured key.
    Keys are compared in constant time; no configured key means auth is off."""

    def __init__(self, app: ASGIApp, keys: list[str], prefix: str = "/v1") -> None:
        self.app = app
        self.keys = [k.encode("utf-8") for k in keys]
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        guarded = scope["type"] == "http" and self.keys and self._guarded(scope["path"])
        if guarded and not self._valid(scope):
            response = JSONResponse(
                {"detail": "missing or invalid API key: send 'Authorization: Bearer <key>'"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _guarded(self, path: str) -> bool:
        return path == self.prefix or path.startswith(self.prefix + "/")

    def _valid(self, scope: Scope) -> bool:
        header = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        scheme, _, token = header.partition(b" ")
        token = token.strip()
        if scheme.lower() != b"bearer" or not token:
            return False
        matched = False
        for key in self.keys:  # no early exit: the time taken says nothing about which key matched
            matched |= hmac.compare_digest(key, token)
        return matched


class BodyLimit:
    """413 for request bodies over their limit: ``upload_limit`` bytes for multipart uploads, else the
    path's entry in ``json_limits`` or ``json_limit`` (a JSON body is parsed and validated on the event
    loop, so its size bounds how long one request can hold it: 3.5 MB of unknown keys took 14 s). A
    declared Content-Length is refused up front, and a chunked body is counted as it streams in."""

    def __init__(
        self, app: ASGIApp, upload_limit: int, json_limit: int, json_limits: dict[str, int] | None = None
    ) -> None:
        self.app = app
        self.upload_limit = upload_limit
        self.json_limit = json_limit
        self.json_limits = json_limits or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        upload = headers.get(b"content-type", b"").lower().startswith(b"multipart/form-data")
        limit = self.upload_limit if upload else self.json_limits.get(scope["path"], self.json_limit)
        too_large = f"request body over the {limit:,}-byte limit"
        if upload:
            too_large += "; send smaller or fewer files"
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await JSONResponse({"detail": too_large}, status_code=413)(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, too_large)  # FastAPI answers it as JSON
            return message

        await self.app(scope, counted, send)
