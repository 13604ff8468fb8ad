"""A workspace on a read-only disk: reads work as usual, `ask` answers without storing and says so
before generating, and writes are refused with one line that names the path, changing nothing.

The home is made read-only the way a disk is: a read-only bind mount, in a mount namespace of the
`rag` process's own (`unshare --mount`, as root). chmod would not do: it does not stop root. Where
mounts are impossible (not root, no unshare) the tests skip with the reason, except under CI."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import httpx
import pytest
from alembic import command

from rag.config import Settings
from rag.core import Rag
from rag.generate.weights import convert_gguf
from rag.resources import resolve_model_path
from rag.storage.engine import alembic_config, make_engine, transaction
from rag.storage.orm import AnswerRecord
from tests.conftest import MODELS_CACHE, SMALL_GENERATOR
from tests.factories import make_answer
from tests.procs import cli_env, one_error_line, rag_command, serving

pytestmark = pytest.mark.slow  # spawns the CLI; most tests load the embedder, two the generator

# run as `sh -c READ_ONLY_MOUNT FOLDER COMMAND...`: FOLDER is mounted read-only over itself
READ_ONLY_MOUNT = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
UNSHARE = ["unshare", "--mount", "--propagation", "private", "sh", "-c", READ_ONLY_MOUNT]

REFUSED = "cannot write to the workspace: {home} is read-only (a read-only mount, or no write permission)"
LAMP = "The hallway lamp is switched off at ten in the evening by the caretaker, Mrs Albers."
BOILER = "The boiler in the basement is serviced every October by an engineer from the gas company."


def mount_problem(folder: Path) -> str | None:
    """Why a read-only bind mount cannot be made here, or None when it can."""
    if os.geteuid() != 0:
        return "read-only bind mounts need root (chmod does not stop root, so only a mount can test this)"
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    folder.mkdir(parents=True, exist_ok=True)
    probe = subprocess.run(
        [*UNSHARE, str(folder), "sh", "-c", 'touch "$0/probe"', str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if "Read-only file system" in probe.stderr:
        return None
    return f"cannot bind-mount a folder read-only here: {probe.stderr.strip() or 'the mount stayed writable'}"


@pytest.fixture(scope="module")
def mounts(tmp_path_factory: pytest.TempPathFactory) -> None:
    problem = mount_problem(tmp_path_factory.mktemp("mount-probe"))
    if problem is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"read-only bind mounts are required under CI: {problem}")
    pytest.skip(problem)


def run_read_only(
    home: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`rag ARGS --home HOME` with HOME mounted read-only for that process alone."""
    command = [*UNSHARE, str(home), *rag_command(*args, "--home", str(home))]
    return subprocess.run(
        command, capture_output=True, text=True, env={**cli_env(), **(env or {})}, timeout=300, check=False
    )


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with a hash of its bytes: what "nothing changed" means."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("docs")
    (folder / "lamp.md").write_text(f"# Lamp\n\n{LAMP}\n")
    (folder / "boiler.txt").write_text(BOILER + "\n")
    return folder


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory, docs: Path) -> Path:
    """A workspace with two documents ingested and one answer stored, written while it was writable."""
    home = tmp_path_factory.mktemp("filled") / "home"
    rag = Rag(Settings(home=home))
    summary = rag.ingest([docs])
    assert summary.added == 2 and not summary.failed
    answer = make_answer()
    with transaction(rag.workspace.database.sessions) as s:
        record = AnswerRecord(id=answer.id, question=answer.question, answer=answer.answer)
        s.add(record)
        record.risk, record.flagged, record.report = 0.0, False, answer.to_dict()
    rag.workspace.close()
    return home.resolve()


@pytest.fixture
def home(filled: Path, tmp_path: Path, mounts: None) -> Path:
    """A copy of the filled workspace for one test, so no test sees another's leftovers."""
    copy = tmp_path / "home"
    shutil.copytree(filled, copy)
    return copy.resolve()


def test_reads_work_as_usual_and_write_nothing(home: Path) -> None:
    before = snapshot(home)
    listed = run_read_only(home, "docs", "list")
    assert (listed.returncode, listed.stderr) == (0, ""), listed.stderr
    assert "lamp.md" in listed.stdout and "boiler.txt" in listed.stdout and "2 documents" in listed.stdout
    checked = run_read_only(home, "index", "check")
    assert (checked.returncode, checked.stderr) == (0, ""), checked.stderr
    assert checked.stdout.startswith("ok: 2 chunks in SQL, FAISS and BM25")
    found = run_read_only(home, "search", "when is the hallway lamp switched off?", "--k", "1")
    assert (found.returncode, found.stderr) == (0, ""), found.stderr
    assert "lamp.md" in found.stdout.splitlines()[0] and "caretaker" in found.stdout
    stored = make_answer()
    shown = run_read_only(home, "report", stored.id)
    assert (shown.returncode, shown.stderr) == (0, ""), shown.stderr
    assert shown.stdout.startswith(stored.answer)
    assert snapshot(home) == before


def test_an_index_out_of_step_is_repaired_in_memory_and_reported(home: Path) -> None:
    """The saved indexes are gone: search rebuilds them in memory from SQL (it cannot save them),
    and `index check` still says they disagree, with its usual exit code."""
    shutil.rmtree(home / "index")
    found = run_read_only(home, "search", "who services the boiler?", "--k", "1", "--mode", "lexical")
    assert (found.returncode, found.stderr) == (0, ""), found.stderr
    assert "boiler.txt" in found.stdout.splitlines()[0]
    checked = run_read_only(home, "index", "check")
    assert checked.returncode == 1 and checked.stderr == ""
    assert checked.stdout.startswith("MISMATCH: SQL has 2 chunks")
    assert not (home / "index").exists()


@pytest.mark.parametrize(
    "args",
    [("ingest", "{docs}"), ("docs", "rm", "1"), ("index", "rebuild")],
    ids=["ingest", "docs-rm", "index-rebuild"],
)
def test_writes_are_refused_in_one_line_naming_the_home(
    home: Path, docs: Path, args: tuple[str, ...]
) -> None:
    (docs / "new.md").write_text("A third document, which must not get in.\n")
    before = snapshot(home)
    try:
        done = run_read_only(home, *(a.format(docs=docs) for a in args))
    finally:
        (docs / "new.md").unlink()
    assert done.returncode == 1, done.stdout
    assert one_error_line(done.stderr) == "error: " + REFUSED.format(home=home)
    assert snapshot(home) == before


def test_a_read_only_home_without_a_database_says_so(tmp_path: Path, mounts: None) -> None:
    empty = (tmp_path / "empty").resolve()
    empty.mkdir()
    done = run_read_only(empty, "docs", "list")
    assert done.returncode == 1
    assert one_error_line(done.stderr) == (
        f"error: there is no database at {empty / 'rag.db'} and {empty} is read-only: "
        "ingest into this workspace where it can be written first"
    )
    assert list(empty.iterdir()) == []


def test_a_read_only_database_of_an_older_schema_is_not_migrated_but_named(home: Path) -> None:
    """Migrating is writing: the read-only open checks the schema instead, and says what to do."""
    db_url = f"sqlite:///{home / 'rag.db'}"
    engine = make_engine(db_url, migrate=False)
    with engine.begin() as conn:
        cfg = alembic_config(db_url)
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "-1")  # as an older sightline left it
    engine.dispose()
    done = run_read_only(home, "docs", "list")
    assert done.returncode == 1
    assert one_error_line(done.stderr) == (
        f"error: the database {home / 'rag.db'} is read-only and its schema is not this sightline's: "
        "open the workspace once where it can be written, to migrate it"
    )
    writable = subprocess.run(
        rag_command("docs", "list", "--home", str(home)),
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=300,
        check=False,
    )
    assert writable.returncode == 0 and "2 documents" in writable.stdout, writable.stderr


def test_a_read_only_home_with_postgresql_reads_but_refuses_writes(
    tmp_path: Path, pg_url: str, mounts: None
) -> None:
    """The database is elsewhere and writable (and migrated on open), the home is not."""
    bare = (tmp_path / "bare").resolve()
    bare.mkdir()
    listed = run_read_only(bare, "docs", "list", "--database-url", pg_url)
    assert (listed.returncode, listed.stderr) == (0, ""), listed.stderr
    assert listed.stdout.strip() == "0 documents"
    removed = run_read_only(bare, "docs", "rm", "1", "--database-url", pg_url)
    assert removed.returncode == 1
    assert one_error_line(removed.stderr) == "error: " + REFUSED.format(home=bare)


GENERATOR_ENV = {"RAG_GENERATOR": SMALL_GENERATOR, "RAG_QUANTIZE": "none"}


def test_ask_without_a_converted_generator_says_where_before_loading_it(home: Path) -> None:
    """The generator would be converted into HOME/models, which cannot be written."""
    done = run_read_only(home, "ask", "when is the lamp switched off?", env=GENERATOR_ENV)
    assert done.returncode == 1
    assert one_error_line(done.stderr) == (
        f"error: the generator {SMALL_GENERATOR} is not converted yet and {home / 'models'} is read-only: "
        "run `rag ask` once where the workspace can be written, or set RAG_MODELS_CACHE to a writable folder"
    )
    assert not (home / "models").exists()


def test_an_onnx_embedder_not_exported_yet_says_where(home: Path) -> None:
    """The graph would be exported into HOME/models, which cannot be written."""
    done = run_read_only(home, "search", "lamp", env={"RAG_EMBED_BACKEND": "onnx"})
    assert done.returncode == 1
    assert one_error_line(done.stderr) == (
        f"error: the ONNX embedder is not exported yet and {home / 'models'} is read-only: run once where "
        "it can be written, set RAG_MODELS_CACHE to a writable folder, or set RAG_EMBED_BACKEND=torch"
    )
    assert not (home / "models").exists()


@pytest.fixture(scope="module")
def converted_generator() -> None:
    """The small generator converted into the test cache beforehand (once ever), so that the ask
    below only reads it and its stderr holds no conversion progress."""
    gguf = Path(resolve_model_path(SMALL_GENERATOR))
    if not (MODELS_CACHE / gguf.stem / "config.json").exists():
        convert_gguf(gguf, MODELS_CACHE / gguf.stem)


def test_ask_answers_and_says_first_that_the_answer_is_not_stored(
    home: Path, converted_generator: None
) -> None:
    before = snapshot(home)
    env = {**GENERATOR_ENV, "RAG_MODELS_CACHE": str(MODELS_CACHE)}
    done = run_read_only(home, "ask", "When is the hallway lamp switched off?", env=env)
    assert done.returncode == 0, done.stderr
    note = f"note: answer not stored: the database {home / 'rag.db'} is read-only"
    assert done.stderr.splitlines() == [note]
    assert "sources (share of the answer's attention):" in done.stdout and "lamp.md" in done.stdout
    assert "answer id" not in done.stdout  # there is no stored report to point to
    assert snapshot(home) == before
    with sqlite3.connect(f"file:{home / 'rag.db'}?mode=ro", uri=True) as db:
        assert db.execute("select id from answers").fetchall() == [(make_answer().id,)]  # no new one


def test_parallel_prefill_keeps_chunk_kv_in_memory_only(home: Path, converted_generator: None) -> None:
    """The disk tier is on, but HOME/kv cannot be made: the answer comes all the same."""
    before = snapshot(home)
    env = {**GENERATOR_ENV, "RAG_MODELS_CACHE": str(MODELS_CACHE), "RAG_PREFILL": "parallel",
           "RAG_KV_DISK_MB": "64", "RAG_MAX_NEW_TOKENS": "8"}
    done = run_read_only(home, "ask", "When is the hallway lamp switched off?", env=env)
    assert done.returncode == 0, done.stderr
    note = f"note: answer not stored: the database {home / 'rag.db'} is read-only"
    assert done.stderr.splitlines() == [note]
    assert "lamp.md" in done.stdout and snapshot(home) == before and not (home / "kv").exists()


def test_the_service_on_a_read_only_home_answers_reads_and_refuses_writes(
    home: Path, converted_generator: None
) -> None:
    """`rag serve` over real HTTP: listing, search and ask work (the answer is not kept, so it has no
    page); an upload or a deletion is a 503 whose detail names the home."""
    env = {**cli_env(), **GENERATOR_ENV, "RAG_MODELS_CACHE": str(MODELS_CACHE), "RAG_MAX_NEW_TOKENS": "16"}
    before = snapshot(home)
    refused = REFUSED.format(home=home)
    serve = [*UNSHARE, str(home), *rag_command("serve", "--home", str(home))]
    with serving(serve, env) as url, httpx.Client(base_url=url, timeout=300) as http:
        listed = http.get("/v1/documents")
        assert listed.status_code == 200 and len(listed.json()["documents"]) == 2
        found = http.post("/v1/search", json={"query": "who services the boiler?", "k": 1})
        assert found.status_code == 200 and found.json()["results"][0]["path"].endswith("boiler.txt")
        asked = http.post("/v1/ask", json={"question": "Who switches off the hallway lamp?"})
        assert asked.status_code == 200 and asked.json()["answer"]
        assert http.get(f"/v1/answers/{asked.json()['id']}").status_code == 404
        upload = http.post("/v1/documents", files={"file": ("new.md", b"A third document.\n")})
        assert (upload.status_code, upload.json()) == (503, {"detail": refused})
        deleted = http.delete("/v1/documents/1")
        assert (deleted.status_code, deleted.json()) == (503, {"detail": refused})
        assert len(http.get("/v1/documents").json()["documents"]) == 2
    assert snapshot(home) == before
