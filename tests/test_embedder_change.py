"""Changing RAG_EMBEDDER on a workspace with chunks: the stored vectors are another model's, so every
command that compares vectors refuses in one line until `rag index rebuild --re-embed`; commands
that need no vectors keep working. Real MiniLM, real FAISS, SQLite and PostgreSQL, and a real HTTP
server for the REST status. The package carries one embedder: the second is the same model named by
its folder, which counts as another embedder (names are compared as given)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, select, update
from typer.testing import CliRunner

from api.main import create_app
from api.testing import LiveServer
from ingest.cli import ingest_command
from rag.cli.main import app
from rag.config import DEFAULT_EMBEDDER, Settings
from rag.core import Rag
from rag.index import embedder_record
from rag.index.embedder_record import EmbedderMismatch, EmbedderRecord, read_record
from rag.resources import resolve_model_path
from rag.storage.database import Database
from rag.storage.engine import transaction
from rag.storage.orm import Chunk, WorkspaceMeta
from tests.docfactory import make_tree
from tests.procs import cli_env

pytestmark = pytest.mark.slow  # loads the embedder

app.command("ingest")(ingest_command)  # as rag.cli.main.main registers it

FACTS = {
    "bell-rock.md": "# Bell Rock\n\nThe Bell Rock light was first lit in 1811 on a reef off Angus.\n",
    "eddystone.txt": "The fourth Eddystone tower, by John Smeaton, used dovetailed granite blocks.\n",
}
QUESTION = "Who built the tower with dovetailed granite?"
OTHER = str(resolve_model_path(DEFAULT_EMBEDDER))  # the same weights under another name
REFUSAL = (
    f"error: this workspace's chunks were embedded with '{DEFAULT_EMBEDDER}' (384 dimensions) but "
    f"RAG_EMBEDDER is '{OTHER}': set RAG_EMBEDDER back to '{DEFAULT_EMBEDDER}', or run "
    f"'rag index rebuild --re-embed' to embed every chunk again with '{OTHER}'"
)


def rag_cli(settings: Settings, embedder: str, *args: str) -> tuple[int, str, str]:
    """`rag ARGS` in-process, with RAG_EMBEDDER set as a user would; (exit code, stdout, stderr)."""
    where = ["--home", str(settings.home), "--database-url", settings.db_url]
    result = CliRunner().invoke(app, [*args, *where], env={"RAG_EMBEDDER": embedder})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.stderr
    return result.exit_code, result.stdout, result.stderr.strip()


def recorded(settings: Settings) -> EmbedderRecord | None:
    db = Database(settings)
    try:
        with db.sessions() as s:
            return read_record(s)
    finally:
        db.close()


def forget_record(settings: Settings) -> None:
    """Make the workspace look like one from before the record was kept."""
    db = Database(settings)
    with transaction(db.sessions) as s:
        s.execute(delete(WorkspaceMeta))
    db.close()


@pytest.fixture
def ingested(settings: Settings, tmp_path: Path) -> Path:
    folder = make_tree(tmp_path / "docs", FACTS)
    rag = Rag(settings)
    assert rag.ingest([folder]).added == 2
    rag.workspace.close()
    return folder


def test_a_changed_embedder_is_refused_until_every_chunk_is_embedded_again(
    settings: Settings, ingested: Path
) -> None:
    assert recorded(settings) == EmbedderRecord(DEFAULT_EMBEDDER, 384)
    commands = [["search", QUESTION], ["ask", QUESTION], ["ingest", str(ingested)], ["index", "check"]]
    for command in [*commands, ["index", "rebuild"], ["docs", "rm", "1"]]:
        assert rag_cli(settings, OTHER, *command)[::2] == (1, REFUSAL), command
    assert recorded(settings) == EmbedderRecord(DEFAULT_EMBEDDER, 384)  # the refused ingest wrote nothing

    code, listed, _ = rag_cli(settings, OTHER, "docs", "list")  # needs no vectors
    assert code == 0 and "2 documents" in listed

    code, out, err = rag_cli(settings, OTHER, "index", "rebuild", "--re-embed")
    assert code == 0, err
    assert out.strip().startswith("re-embedded ") and f"with '{OTHER}'" in out
    assert recorded(settings) == EmbedderRecord(OTHER, 384)
    code, found, err = rag_cli(settings, OTHER, "search", QUESTION, "--k", "1")
    assert code == 0 and "eddystone.txt" in found, err
    code, checked, _ = rag_cli(settings, OTHER, "index", "check")
    assert code == 0 and checked.startswith("ok: ")

    back = rag_cli(settings, DEFAULT_EMBEDDER, "search", QUESTION)  # the old name is now the other one
    assert back[0] == 1 and f"embedded with '{OTHER}'" in back[2]


def test_the_service_answers_503_with_the_line_and_still_lists_documents(
    sqlite_settings: Settings, tmp_path: Path
) -> None:
    """Search, upload and deletion: 503, not a 4xx: the request is fine; the service's own setting
    disagrees with its data."""
    folder = make_tree(tmp_path / "docs", FACTS)
    Rag(sqlite_settings).ingest([folder])
    other = sqlite_settings.model_copy(update={"embedder": OTHER})
    server = LiveServer(create_app(other, load_models=False))
    with server as url, httpx.Client(base_url=url, timeout=120) as http:
        refused = (503, {"detail": REFUSAL.removeprefix("error: ")})
        found = http.post("/v1/search", json={"query": QUESTION})
        assert (found.status_code, found.json()) == refused
        upload = http.post("/v1/documents", files={"file": ("new.md", b"A third document.\n")})
        assert (upload.status_code, upload.json()) == refused
        deleted = http.delete("/v1/documents/1")
        assert (deleted.status_code, deleted.json()) == refused
        listed = http.get("/v1/documents")
        assert listed.status_code == 200 and len(listed.json()["documents"]) == 2


def test_an_ask_reads_the_record_once_and_refuses_a_mismatch_before_the_generator_loads(
    sqlite_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One read of the record per question (not one by Rag and another by its Retriever), and still
    before the generator loads. The generator is a stand-in: what is counted happens before it."""
    Rag(sqlite_settings).ingest([make_tree(tmp_path / "docs", FACTS)])
    reads: list[int] = []

    def counted(session: Any) -> EmbedderRecord | None:
        reads.append(1)
        return read_record(session)

    monkeypatch.setattr(embedder_record, "read_record", counted)
    rag = Rag(sqlite_settings)
    rag.search(QUESTION)  # loads the index
    stand_in = SimpleNamespace(generator=SimpleNamespace(check_lengths=lambda *_: None),
                               run=lambda *_, **__: None)
    monkeypatch.setattr(rag, "load_generator", lambda: stand_in)
    for verb in (rag.search, rag.ask):
        reads.clear()
        verb(QUESTION)
        assert len(reads) == 1, verb

    other = Rag(sqlite_settings.model_copy(update={"embedder": OTHER}))
    monkeypatch.setattr(other, "load_generator", lambda: pytest.fail("the generator loaded"))
    with pytest.raises(EmbedderMismatch):
        other.ask(QUESTION)
    assert "retriever" not in vars(other)  # nor did the embedder


def test_a_workspace_from_before_the_record_adopts_its_index_manifests_model(
    settings: Settings, ingested: Path
) -> None:
    forget_record(settings)
    assert rag_cli(settings, OTHER, "search", QUESTION)[::2] == (1, REFUSAL)
    assert recorded(settings) == EmbedderRecord(DEFAULT_EMBEDDER, 384)  # adopted, and written down


def test_a_workspace_from_before_the_record_without_a_manifest_adopts_the_configured_one(
    settings: Settings, ingested: Path
) -> None:
    forget_record(settings)
    shutil.rmtree(settings.index_dir)  # no saved index, so no manifest naming a model
    code, found, err = rag_cli(settings, OTHER, "search", QUESTION, "--k", "1")
    assert code == 0 and "eddystone.txt" in found, err
    assert recorded(settings) == EmbedderRecord(OTHER, 384)


def test_a_workspace_whose_chunks_are_all_gone_takes_the_new_embedder(
    settings: Settings, ingested: Path
) -> None:
    """No chunk left: nothing to mix up, so the next ingest records its own embedder."""
    rag = Rag(settings)
    for doc in rag.documents():
        rag.delete_document(doc.id)
    rag.workspace.close()
    code, _, err = rag_cli(settings, OTHER, "ingest", str(ingested))
    assert code == 0, err
    assert recorded(settings) == EmbedderRecord(OTHER, 384)


_KILLED_RE_EMBED = """
import os, signal, sys
from rag.config import Settings
from rag.ingest.reembed import re_embed
from rag.workspace import Workspace

ws = Workspace(Settings(home=sys.argv[1], database_url=sys.argv[2], embedder=sys.argv[3]))
die = lambda done, total: os.kill(os.getpid(), signal.SIGKILL)  # after the first batch's writes
re_embed(ws.database, ws.write_lock, ws.indexes, ws.load_embedder, die)
"""


def test_a_re_embed_killed_part_way_leaves_the_old_vectors_and_record(
    settings: Settings, ingested: Path
) -> None:
    """The stored vectors are first set to zeros, so that vectors written by the killed run (the same
    weights make the same vectors) would show."""
    db = Database(settings)
    with transaction(db.sessions) as s:
        s.execute(update(Chunk).values(embedding=bytes(4 * 384)))
    db.close()
    done = subprocess.run(
        [sys.executable, "-c", _KILLED_RE_EMBED, str(settings.home), settings.db_url, OTHER],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert recorded(settings) == EmbedderRecord(DEFAULT_EMBEDDER, 384)
    db = Database(settings)
    with db.sessions() as s:
        assert set(s.scalars(select(Chunk.embedding))) == {bytes(4 * 384)}
    db.close()
