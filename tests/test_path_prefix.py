"""``path_prefix`` means one thing on both databases: the path begins with it, case and all (as paths
are on Linux), with LIKE's wildcards taken literally; ingest's own "files under this root" likewise.
The issue's probe found ``/WORK`` matching 50 results on SQLite and 0 on PostgreSQL. No model."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.config import Settings
from rag.storage.engine import transaction
from rag.storage.orm import Chunk, Document
from rag.storage.queries import documents_under, filtered_chunk_ids
from rag.workspace import Workspace

PATHS = ["/work/a.txt", "/Work/b.txt", "/WORK/c.txt",
         "/wörk/d.txt", "/WÖRK/e.txt", "/w_rk/f.txt", "/w%rk/g.txt"]


@pytest.fixture
def chunk_of(settings: Settings) -> dict[str, int]:
    ws = Workspace(settings)
    with transaction(ws.database.sessions) as s:
        docs = []
        for p in PATHS:
            doc = Document(path=p, sha256=p, size=1, mtime=0.0, mime="text/plain", doc_type="txt")
            doc.chunks = [Chunk(ordinal=0, text=p, char_start=0, char_end=1, token_count=1, embedding=b"")]
            docs.append(doc)
        s.add_all(docs)
        s.flush()
        found = {d.path: d.chunks[0].id for d in docs}
    ws.close()
    return found


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("/work", ["/work/a.txt"]),
        ("/Work/", ["/Work/b.txt"]),
        ("/WORK", ["/WORK/c.txt"]),
        ("/wörk", ["/wörk/d.txt"]),
        ("/WÖRK/e", ["/WÖRK/e.txt"]),
        ("/w_rk", ["/w_rk/f.txt"]),
        ("/w%", ["/w%rk/g.txt"]),
        ("/wo", ["/work/a.txt"]),
        ("/x", []),
    ],
)
def test_path_prefix_is_case_sensitive_and_literal(
    settings: Settings, chunk_of: dict[str, int], prefix: str, expected: list[str]
) -> None:
    ws = Workspace(settings)
    with ws.database.sessions() as s:
        got = filtered_chunk_ids(s, prefix, None)
    ws.close()
    assert got is not None and sorted(got.tolist()) == sorted(chunk_of[p] for p in expected)


def test_ingest_under_a_root_never_counts_another_cased_folder_as_its_own(
    settings: Settings, chunk_of: dict[str, int]
) -> None:
    """Else syncing ``/Work`` would delete ``/work``'s documents as gone from it."""
    ws = Workspace(settings)
    with ws.database.sessions() as s:
        under = {root: sorted(documents_under(s, Path(root))) for root in ("/Work", "/WORK/c.txt", "/w_rk")}
    ws.close()
    assert under == {"/Work": ["/Work/b.txt"], "/WORK/c.txt": ["/WORK/c.txt"], "/w_rk": ["/w_rk/f.txt"]}
