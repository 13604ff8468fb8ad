"""Searches on threads while `Rag.ingest` adds files in the same process (as a REST upload does while
the retrieval pool answers): no search fails, and every result agrees with SQL. Before searches took
the index lock, BM25 raised "dictionary changed size during iteration" here (its delta of recent
additions was walked while an add grew it) and FAISS could be read mid-add."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from rag.config import Settings
from rag.core import Rag
from rag.storage.orm import Chunk, Document
from rag.storage.queries import chunk_ids
from rag.types import Source
from tests.docfactory import make_tree

pytestmark = pytest.mark.slow  # loads the embedder

N_FILES = 200
ROUNDS = 3  # each round adds N_FILES new files: enough to have hit the race every run before the fix
READERS = 4
K = 5


def _shelf(root: Path, round_: int) -> Path:
    return make_tree(
        root / f"round-{round_}",
        {
            f"card-{i:03d}.md": f"# Card {round_}-{i}\n\n"
            + " ".join(
                f"Lighthouse {i} on shelf {round_} has {i % 9 + 1} keepers and beacon {j}." for j in range(8)
            )
            + "\n"
            for i in range(N_FILES)
        },
    )


@pytest.fixture
def eager_thread_switches() -> Iterator[None]:
    """Switch threads every few microseconds rather than every 5 ms, so that a search lands inside
    an index update on every run instead of on a lucky one."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


@pytest.mark.usefixtures("eager_thread_switches")
def test_searches_during_an_in_process_ingest_agree_with_sql(
    sqlite_settings: Settings, tmp_path: Path
) -> None:
    rag = Rag(sqlite_settings)
    rag.ingest([_shelf(tmp_path / "corpus", 0)])  # something to find from the first search on
    stop = threading.Event()
    errors: list[BaseException] = []
    results: list[tuple[str, list[Source]]] = []

    def search(n: int) -> None:
        modes = ("lexical", "hybrid", "dense")
        i = 0
        while not stop.is_set():
            mode = modes[(i + n) % len(modes)]
            try:
                results.append((mode, rag.search(f"which lighthouse has {i % 9 + 1} keepers", K, mode=mode)))
            except BaseException as exc:  # any failure is the finding
                errors.append(exc)
                return
            i += 1

    threads = [threading.Thread(target=search, args=(n,), daemon=True) for n in range(READERS)]
    for t in threads:
        t.start()
    try:
        for round_ in range(1, ROUNDS + 1):
            summary = rag.ingest([_shelf(tmp_path / "corpus", round_)])
            assert summary.added == N_FILES and not summary.failed
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert not errors, repr(errors[0])
    assert len(results) > ROUNDS * READERS  # the readers really ran alongside the writer

    with rag.workspace.database.sessions() as s:
        rows = {c.id: (c.text, d.id, d.path) for c, d in s.execute(select(Chunk, Document).join(Document))}
        sql_ids = chunk_ids(s)
    for mode, sources in results:
        assert len(sources) <= K
        assert [x.rank for x in sources] == list(range(1, len(sources) + 1))
        assert len({x.chunk_id for x in sources}) == len(sources), (mode, sources)
        if mode != "hybrid":  # raw scores, best first (fused ranks are not raw scores)
            scores = [x.score for x in sources]
            assert scores == sorted(scores, reverse=True), (mode, scores)
        for x in sources:
            assert rows[x.chunk_id] == (x.text, x.document_id, x.path)

    # Nothing lost or doubled in memory, and what was saved is what SQL holds.
    indexes = rag.workspace.indexes
    in_memory = indexes.vectors.ids().tolist()
    assert len(in_memory) == len(set(in_memory)) == len(indexes.lexical) == len(sql_ids)
    assert indexes.check().ok
