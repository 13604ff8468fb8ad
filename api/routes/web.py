"""The web page: GET / (ask, with recent answers) and GET /documents, plus its files under /static.

The page is plain HTML, CSS and JavaScript modules shipped in ``api/static`` (no build step). It holds
no data itself: its scripts call /v1 with the API key the user typed (kept in sessionStorage), so the
page and its files need no key. A strict Content-Security-Policy lets only the package's own files run
or style the page, and lets its scripts talk to this origin alone."""

from __future__ import annotations

from importlib import resources
from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response

CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "img-src 'self' data:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidate (ETag), so an upgraded server's files are picked up at once
}

router = APIRouter(tags=["web"], include_in_schema=False)


def _page() -> HTMLResponse:
    html = resources.files("api").joinpath("static/index.html").read_text(encoding="utf-8")
    return HTMLResponse(html, headers=HEADERS)


@router.get("/")
def ask_page() -> HTMLResponse:
    return _page()


@router.get("/documents")
def documents_page() -> HTMLResponse:
    return _page()


class StaticPage(StaticFiles):
    """The page's own files, with the page's headers."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers.update(HEADERS)
        return response


def static_files() -> StaticPage:
    return StaticPage(packages=[("api", "static")])
