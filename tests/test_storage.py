"""Schema and migrations on both backends: Alembic owns the schema and matches the models."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from typer.testing import CliRunner

from rag.cli.main import app
from rag.config import Settings
from rag.storage.database import Database
from rag.storage.engine import alembic_config, make_engine, transaction
from rag.storage.orm import Base, Chunk, Document
from rag.workspace import Workspace


def test_migrations_create_the_schema_the_models_describe(db_url: str) -> None:
    engine = make_engine(db_url)
    tables = set(inspect(engine).get_table_names())
    assert {"documents", "chunks", "ingest_runs", "answers", "alembic_version"} <= tables
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == [], f"models and migrations disagree: {diff}"


def test_opening_a_migrated_database_again_is_a_no_op(db_url: str) -> None:
    """The packaged migrations' head, read from the scripts (not a hard-coded revision), is where
    the database stays after a second open."""
    head = ScriptDirectory.from_config(alembic_config(db_url)).get_current_head()
    assert head is not None
    make_engine(db_url).dispose()
    engine = make_engine(db_url)
    with engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == head
        assert conn.exec_driver_sql("SELECT count(*) FROM alembic_version").scalar_one() == 1


def test_a_brand_new_workspace_checks_ok_but_unsaved_chunks_do_not(settings: Settings) -> None:
    """No index was ever saved: with no chunks in SQL that is the empty, consistent index (exit 0);
    with chunks in SQL it is a mismatch to repair."""
    args = ["index", "check", "--home", str(settings.home), "--database-url", settings.db_url]
    fresh = CliRunner().invoke(app, args)
    assert (fresh.exit_code, fresh.stdout.split(":")[0]) == (0, "ok"), fresh.output
    assert not (settings.home / "index").exists()  # checked without loading a model or saving

    ws = Workspace(settings)
    with transaction(ws.database.sessions) as s:
        doc = Document(path="/a.md", sha256="0" * 64, size=1, mtime=0.0, mime="text/markdown", doc_type="md")
        doc.chunks = [Chunk(ordinal=0, text="a", char_start=0, char_end=1, token_count=1, embedding=b"")]
        s.add(doc)
    check = ws.indexes.check()
    ws.close()
    assert not check.ok and (check.db_count, check.index_count) == (1, 0)


def test_updated_at_is_utc_with_an_offset_on_every_backend(settings: Settings) -> None:
    """SQLite stores datetimes without an offset; a DocumentInfo's updated_at must still be a full
    RFC 3339 date-time."""
    from datetime import timedelta

    from rag.storage.queries import document_infos

    db = Database(settings)
    with transaction(db.sessions) as s:
        s.add(Document(path="/a.md", sha256="", size=1, mtime=0.0, mime="text/markdown", doc_type="md"))
    with db.sessions() as s:
        (info,) = document_infos(s)
    db.close()
    assert info.updated_at.utcoffset() == timedelta(0)
    assert info.updated_at.isoformat().endswith("+00:00")
