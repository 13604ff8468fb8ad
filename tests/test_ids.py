"""Ids are never handed out twice, on both databases, in new workspaces and in ones migrated from
before (migration 0005): a stored answer, a report or a client that names an id keeps meaning the
same row or none. No model is loaded."""

from __future__ import annotations

from typing import Any

from alembic import command
from sqlalchemy import Engine, inspect, select, text
from sqlalchemy.orm import sessionmaker

from rag.config import Settings
from rag.storage.engine import alembic_config, make_engine, transaction
from rag.storage.orm import AnswerRecord, Chunk, Document, IngestRun
from tests.modelless import add_document, open_workspace

PREVIOUS_HEAD = "0004"


def _doc_id(ws: Any, path: str) -> int:
    with ws.database.sessions() as s:
        return int(s.scalar(select(Document.id).where(Document.path == path)))


def test_deleting_the_newest_document_does_not_hand_its_ids_to_the_next(settings: Settings) -> None:
    ws = open_workspace(settings)
    add_document(ws, "a", 2)
    b_chunks = add_document(ws, "b", 3)
    b = _doc_id(ws, "/b.txt")
    assert ws.documents.delete(b)
    c_chunks = add_document(ws, "c", 3)
    c = _doc_id(ws, "/c.txt")
    with transaction(ws.database.sessions) as s:
        runs = [IngestRun(roots=[]), IngestRun(roots=[])]
        s.add_all(runs)
        s.flush()
        newest_run = runs[-1].id
        s.delete(runs[-1])
    with transaction(ws.database.sessions) as s:
        run = IngestRun(roots=[])
        s.add(run)
        s.flush()
        assert run.id > newest_run
    ws.close()
    assert c > b and min(c_chunks) > max(b_chunks), (b, b_chunks, c, c_chunks)


def _document(name: str, n: int) -> Document:
    doc = Document(path=f"/{name}.txt", sha256=name, size=1, mtime=0.0, mime="text/plain", doc_type="txt")
    doc.chunks = [
        Chunk(ordinal=i, text=f"{name}{i}", char_start=i, char_end=i + 1, token_count=1, embedding=b"")
        for i in range(n)
    ]
    return doc


def _workspace_at_previous_head(db_url: str) -> Engine:
    engine = make_engine(db_url, migrate=False)
    with engine.begin() as conn:
        cfg = alembic_config(db_url)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, PREVIOUS_HEAD)
    return engine


def _rows(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    with engine.connect() as conn:
        return {
            t: [tuple(r) for r in conn.execute(text(f"SELECT * FROM {t} ORDER BY 1"))]
            for t in ("documents", "chunks", "ingest_runs", "answers")
        }


def _indexes(engine: Engine) -> dict[str, set[tuple[str, bool]]]:
    found = inspect(engine)
    return {
        t: {(ix["name"], bool(ix["unique"])) for ix in found.get_indexes(t)}
        for t in ("documents", "chunks", "answers")
    }


def test_a_workspace_from_the_previous_schema_keeps_its_rows_and_stops_reusing(db_url: str) -> None:
    """At 0004 (SQLite reused ids then): documents a, b, c with chunks, an answer citing c's chunks, and
    c deleted. Migrated to head: every row and index is kept, cascades still work, and neither c's
    document id nor its chunk ids (named by the stored answer) are handed out again."""
    old = _workspace_at_previous_head(db_url)
    with transaction(sessionmaker(old)) as s:
        docs = []
        for name in "abc":
            docs.append(_document(name, 2))
        s.add_all(docs)
        s.add(IngestRun(roots=["/"], summary={"added": 3}))
        s.flush()
        gone_doc, gone_chunks = docs[-1].id, [c.id for c in docs[-1].chunks]
        sources = [{"chunk_id": cid, "document_id": gone_doc} for cid in gone_chunks]
        report = {"sources": sources}
        s.add(AnswerRecord(id="ans1", question="q", answer="a", risk=0.1, flagged=False, report=report))
    with old.begin() as conn:
        conn.execute(text("DELETE FROM chunks WHERE document_id = :d"), {"d": gone_doc})
        conn.execute(text("DELETE FROM documents WHERE id = :d"), {"d": gone_doc})
    before, indexes_before = _rows(old), _indexes(old)
    old.dispose()

    engine = make_engine(db_url)  # migrates to head
    assert _rows(engine) == before
    assert _indexes(engine) == indexes_before
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            assert conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall() == []
            names = conn.exec_driver_sql("SELECT name FROM sqlite_master").scalars().all()
            assert not [n for n in names if n.startswith("_")], names  # nothing set aside is left
    with transaction(sessionmaker(engine)) as s:
        doc = _document("d", 1)
        s.add(doc)
        s.flush()
        new_doc, new_chunk = doc.id, doc.chunks[0].id
    assert new_doc > gone_doc and new_chunk > max(gone_chunks), (new_doc, new_chunk, gone_doc, gone_chunks)
    with engine.begin() as conn:  # ON DELETE CASCADE survived the rebuild
        first = before["documents"][0][0]
        conn.execute(text("DELETE FROM documents WHERE id = :d"), {"d": first})
        left = conn.execute(text("SELECT count(*) FROM chunks WHERE document_id = :d"), {"d": first}).scalar()
    assert left == 0
    engine.dispose()


def test_a_stored_answer_says_which_of_its_sources_changed_or_went(settings: Settings) -> None:
    """An answer cites chunks of documents a and b. Then a's first chunk is rewritten in place (as a
    reused id would look) and b is deleted: served over REST (a real server) and read by `Rag`, each
    source says so, and keeps the text the answer saw."""
    import httpx

    from api.main import create_app
    from api.testing import LiveServer
    from rag.core import Rag
    from tests.factories import make_answer

    ws = open_workspace(settings)
    a_chunks, b_chunks = add_document(ws, "a", 2), add_document(ws, "b", 1)
    answer = make_answer()
    with ws.database.sessions() as s:
        rows = {c.id: c for c in s.scalars(select(Chunk))}
    for src, cid in zip(sorted(answer.sources, key=lambda x: x.rank), [*a_chunks, *b_chunks], strict=True):
        row = rows[cid]
        src.chunk_id, src.document_id, src.text = cid, row.document_id, row.text
        src.char_start, src.char_end = row.char_start, row.char_end
    with transaction(ws.database.sessions) as s:
        report = answer.to_dict()
        s.add(AnswerRecord(id=answer.id, question="q", answer="a", risk=0.5, flagged=False, report=report))
        s.get(Chunk, a_chunks[0]).text = "other text entirely"  # type: ignore[union-attr]
    assert ws.documents.delete(_doc_id(ws, "/b.txt"))
    ws.close()
    expected = {a_chunks[0]: "changed", a_chunks[1]: None, b_chunks[0]: "gone"}
    seen = {src.chunk_id: src.text for src in answer.sources}

    rag = Rag(settings)
    served = rag.get_answer(answer.id)
    assert served is not None
    assert {s.chunk_id: s.stale for s in served.sources} == expected
    assert {s.chunk_id: s.text for s in served.sources} == seen
    assert f"Chunk {a_chunks[0]} now holds other text" in (rag.report_html(answer.id) or "")
    rag.workspace.close()

    with LiveServer(create_app(settings, load_models=False)) as base:
        body = httpx.get(f"{base}/v1/answers/{answer.id}", timeout=30).json()
    assert {s["chunk_id"]: s["stale"] for s in body["sources"]} == expected
