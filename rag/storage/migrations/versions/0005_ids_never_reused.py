"""ids are never reused: SQLite AUTOINCREMENT on documents, chunks and ingest_runs

Without it SQLite gives a new row max(id) + 1, so deleting the newest document hands its id (and its
chunks' ids, which are also FAISS ids) to the next one, and a stored answer, a report or a client's
bookmark naming it would point at other text. PostgreSQL's SERIAL columns draw from sequences that
never go back: nothing to do there.

SQLite cannot add AUTOINCREMENT to a table, so the three are rebuilt with their rows, ids and
indexes. chunks references documents with ON DELETE CASCADE, and dropping a referenced table
deletes its rows first (with foreign keys on, which every sightline connection has), so the chunks
are set aside in a plain copy while documents is rebuilt (batch mode), then put back. Everything
runs in one transaction: pysqlite opens one only at the first row change, so the migration starts
with one (a no-op update of alembic_version); a process killed half way leaves the workspace as it
was. The counters start above every id a stored answer names, so ids deleted before this migration
are not handed out again either.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-10
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHUNK_COLUMNS = "id, document_id, ordinal, text, char_start, char_end, token_count, page, heading, embedding"


def _chunks_table(autoincrement: bool) -> None:
    op.create_table(
        "chunks",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "document_id", sa.Integer(), sa.ForeignKey("documents.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("ordinal", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("char_start", sa.Integer(), nullable=False),
        sa.Column("char_end", sa.Integer(), nullable=False),
        sa.Column("token_count", sa.Integer(), nullable=False),
        sa.Column("page", sa.Integer(), nullable=True),
        sa.Column("heading", sa.String(1024), nullable=True),
        sa.Column("embedding", sa.LargeBinary(), nullable=False),
        sqlite_autoincrement=autoincrement,
    )
    op.create_index("ix_chunks_document_id", "chunks", ["document_id"])


def _rebuild(autoincrement: bool) -> None:
    op.execute("UPDATE alembic_version SET version_num = version_num")  # pysqlite: BEGIN, before any DDL
    op.execute(f"CREATE TABLE _chunks_kept AS SELECT {CHUNK_COLUMNS} FROM chunks")
    op.drop_index("ix_chunks_document_id", table_name="chunks")
    op.drop_table("chunks")
    for table in ("documents", "ingest_runs"):
        with op.batch_alter_table(
            table, recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}
        ):
            pass
    _chunks_table(autoincrement)
    op.execute(f"INSERT INTO chunks ({CHUNK_COLUMNS}) SELECT {CHUNK_COLUMNS} FROM _chunks_kept")
    op.drop_table("_chunks_kept")


def _named_by_answers(key: str) -> str:
    """The largest ``key`` (chunk_id or document_id) among the sources of stored answers."""
    return (
        f"SELECT coalesce(max(CAST(json_extract(s.value, '$.{key}') AS INTEGER)), 0) "
        "FROM answers, json_each(answers.report, '$.sources') AS s"
    )


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    _rebuild(autoincrement=True)
    for table, key in (("documents", "document_id"), ("chunks", "chunk_id"), ("ingest_runs", None)):
        named = _named_by_answers(key) if key else "SELECT 0"
        op.execute(f"DELETE FROM sqlite_sequence WHERE name = '{table}'")
        op.execute(
            f"INSERT INTO sqlite_sequence (name, seq) SELECT '{table}', "
            f"max((SELECT coalesce(max(id), 0) FROM {table}), ({named}))"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    _rebuild(autoincrement=False)
