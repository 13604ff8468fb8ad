"""Helpers for tests that drive the real `rag` console script as subprocesses (kill and concurrency
tests) and compare workspaces by what their SQL holds."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from rag.config import Settings
from rag.storage.engine import make_engine
from rag.storage.orm import Chunk, Document, IngestRun


def rag_command(*args: str) -> list[str]:
    """The installed console script next to this interpreter (what a user runs), else its equivalent."""
    script = Path(sys.executable).parent / "rag"
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-c", "import sys; from rag.cli.main import main; sys.exit(main())", *args]


def one_error_line(stderr: str) -> str:
    """The one line a failing command writes to stderr: ``error: ...``, and no traceback."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


def workspace_args(settings: Settings) -> list[str]:
    return ["--home", str(settings.home), "--database-url", settings.db_url]


def cli_env() -> dict[str, str]:
    """No RAG_* settings leak in from the caller's environment; the flags say everything."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env["TOKENIZERS_PARALLELISM"] = "false"
    return env


def start_ingest(settings: Settings, paths: Sequence[Path], *extra: str) -> subprocess.Popen[str]:
    cmd = rag_command("ingest", *map(str, paths), "--json", *workspace_args(settings), *extra)
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(), start_new_session=True
    )


def run_cli(settings: Settings, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    cmd = rag_command(*args, *workspace_args(settings))
    return subprocess.run(cmd, capture_output=True, text=True, env=cli_env(), timeout=timeout, check=False)


@dataclass
class Progress:
    """What another process's ingest has written so far (zeros until the schema exists)."""

    runs: int = 0
    running: int = 0
    documents: int = 0
    chunks: int = 0


class Watcher:
    """Reads a workspace's SQL while another process writes it; never migrates (that is the writer's
    job, and a reader racing the first migration of a fresh SQLite file must not create tables)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._engine: sa.Engine | None = None

    def progress(self) -> Progress:
        url = sa.make_url(self.settings.db_url)
        if url.get_backend_name() == "sqlite" and not Path(url.database or "").exists():
            return Progress()
        if self._engine is None:
            self._engine = make_engine(self.settings.db_url, migrate=False)
        try:
            with self._engine.connect() as conn:
                runs = conn.scalar(sa.select(sa.func.count()).select_from(IngestRun)) or 0
                running = (
                    conn.scalar(
                        sa.select(sa.func.count()).select_from(IngestRun).where(IngestRun.status == "running")
                    )
                    or 0
                )
                docs = conn.scalar(sa.select(sa.func.count()).select_from(Document)) or 0
                chunks = conn.scalar(sa.select(sa.func.count()).select_from(Chunk)) or 0
        except DBAPIError:  # tables not there yet, or the database is locked mid-migration
            return Progress()
        return Progress(int(runs), int(running), int(docs), int(chunks))

    def wait_for(
        self, proc: subprocess.Popen[str], ready: Callable[[Progress], bool], timeout: float = 180
    ) -> Progress:
        """Poll until ``ready(progress)`` or the process exits (or time runs out: an AssertionError)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = self.progress()
            if ready(now) or proc.poll() is not None:
                return now
            time.sleep(0.02)
        raise AssertionError(f"ingest made no progress in {timeout:.0f} s: {self.progress()}")

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()


# What a document is, for comparing two workspaces: status, hash, and its chunks in order.
ChunkRow = tuple[int, int, int, str]  # ordinal, char_start, char_end, text
DocState = tuple[str, str, tuple[ChunkRow, ...]]


def snapshot(settings: Settings) -> dict[str, DocState]:
    """Every document by path with its chunks; raises if SQL holds a duplicate (path, ordinal)."""
    engine = make_engine(settings.db_url, migrate=False)
    try:
        with engine.connect() as conn:
            docs = {
                d.id: (d.path, d.status, d.sha256)
                for d in conn.execute(sa.select(Document.id, Document.path, Document.status, Document.sha256))
            }
            chunks: dict[int, list[ChunkRow]] = {doc_id: [] for doc_id in docs}
            query = sa.select(
                Chunk.document_id, Chunk.ordinal, Chunk.char_start, Chunk.char_end, Chunk.text
            ).order_by(Chunk.document_id, Chunk.ordinal)
            for doc_id, ordinal, start, end, text in conn.execute(query):
                chunks[doc_id].append((ordinal, start, end, text))
    finally:
        engine.dispose()
    out: dict[str, DocState] = {}
    for doc_id, (path, status, sha) in docs.items():
        rows = tuple(chunks[doc_id])
        assert [r[0] for r in rows] == list(range(len(rows))), f"{path}: ordinals {[r[0] for r in rows]}"
        assert path not in out, f"duplicate document {path}"
        out[path] = (status, sha, rows)
    return out


def consistent(state: dict[str, DocState]) -> list[str]:
    """SQL invariants that must hold at every instant, even right after a SIGKILL: an 'ok' document
    has its hash and at least one chunk, a 'failed' one has neither (so the next run retries it)."""
    problems = []
    for path, (status, sha, rows) in state.items():
        if status == "ok" and (not rows or len(sha) != 64):
            problems.append(f"{path}: ok with {len(rows)} chunks and hash {sha!r}")
        if status == "failed" and (rows or sha):
            problems.append(f"{path}: failed but keeps {len(rows)} chunks / hash {sha!r}")
        if status not in ("ok", "failed"):
            problems.append(f"{path}: status {status!r}")
    return problems


def run_statuses(settings: Settings) -> list[str]:
    engine = make_engine(settings.db_url, migrate=False)
    try:
        with engine.connect() as conn:
            return list(conn.scalars(sa.select(IngestRun.status).order_by(IngestRun.id)))
    finally:
        engine.dispose()


@contextmanager
def serving(command: list[str], env: dict[str, str]) -> Iterator[str]:
    """`rag serve` (command, ending in its options) on a free port; yields its base URL. On the way
    out the server is stopped, and a traceback in its stderr fails the test."""
    with serving_process(command, env) as (base, _):
        yield base


@contextmanager
def serving_process(command: list[str], env: dict[str, str]) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``serving``, yielding the server's process too (a test may stop it itself)."""
    from api.testing import free_port, wait_ready

    port = free_port()
    server = subprocess.Popen([*command, "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, timeout=900, process=server)
        yield base, server
    finally:
        if server.poll() is None:
            server.terminate()
        try:
            _, err = server.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            _, err = server.communicate()
        assert b"Traceback" not in err, err.decode()[-4000:]
