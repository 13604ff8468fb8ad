"""Shared bench plumbing: where shared data lives, timing, the printed table and the JSON file."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
SHARED_DATA = Path(os.environ.get("RAG_SHARED_DATA", REPO.parent / "shared" / "data"))


@contextmanager
def timer() -> Iterator[Callable[[], float]]:
    """``with timer() as t: ...; t()`` gives the elapsed seconds."""
    start = time.perf_counter()
    end: list[float] = []
    yield lambda: (end[0] if end else time.perf_counter()) - start
    end.append(time.perf_counter())


def machine() -> dict[str, Any]:
    import torch

    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }


Row = tuple[str, Any, str]  # (metric, value, target); an empty target: context, not a goal
REPORTED: list[tuple[str, Row]] = []  # every row of this run, by bench: the summary's source


def print_table(title: str, rows: list[Row]) -> None:
    width = max(len(r[0]) for r in rows)
    print(f"\n## {title}")
    print(f"| {'metric'.ljust(width)} | value | target |")
    print(f"|{'-' * (width + 2)}|-------|--------|")
    for metric, value, target in rows:
        shown = f"{value:.3f}" if isinstance(value, float) else str(value)
        print(f"| {metric.ljust(width)} | {shown} | {target} |")


def report(name: str, rows: list[Row], data: dict[str, Any]) -> Path:
    """Print ``(metric, value, target)`` rows as a table and write ``bench/results/<name>.json``."""
    print_table(name, rows)
    REPORTED.extend((name, row) for row in rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}.json"
    out.write_text(json.dumps({"bench": name, "machine": machine(), **data}, indent=2, default=str))
    print(f"(written to {out.relative_to(REPO)})")
    return out
