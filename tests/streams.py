"""Reading the service's server-sent event streams (``/v1/ask`` with ``stream``) in tests."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

import httpx


def read_events(response: httpx.Response) -> Iterator[tuple[str, Any]]:
    """(event, parsed data) from a text/event-stream response, as they arrive."""
    return events_of(response.iter_lines())


def events_of(lines: Iterable[str]) -> Iterator[tuple[str, Any]]:
    """(event, parsed data) from the lines of an event stream; comments (keep-alives) are skipped."""
    event = None
    for line in lines:
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: "):
            assert event is not None
            yield event, json.loads(line.removeprefix("data: "))
            event = None
