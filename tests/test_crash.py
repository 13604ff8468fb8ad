"""Crash safety: `rag ingest` (the real console script) is SIGKILLed at seeded random moments; after
each kill SQL is consistent, and the next run repairs the index and finishes the job, so the end
state equals one uninterrupted ingest: same documents, same chunks, nothing twice.

Kill moments, one per phase of a run: soon after it takes the lock (scanning, parsing, embedding),
twice inside the burst of per-document commits, and once after the last document is in (saving the
index, closing the run). Between kills the folder changes the way folders do: a file that failed is
fixed, one is edited, one deleted. ``RAG_CRASH_SEED`` picks other moments.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from rag.config import Settings
from rag.core import Rag
from rag.storage.database import Database
from rag.workspace import Workspace
from tests.conftest import MODELS_CACHE
from tests.docfactory import make_binary_with_txt_suffix, make_corrupt_pdf, make_tree
from tests.procs import (
    Progress,
    Watcher,
    consistent,
    run_cli,
    run_statuses,
    snapshot,
    start_ingest,
)

pytestmark = pytest.mark.slow  # spawns and SIGKILLs `rag ingest` processes

SEED = int(os.environ.get("RAG_CRASH_SEED", "5"))
N_NOTES = 300
TOPICS = ["tides", "lamps", "storms", "keepers", "ships", "fog"]


def _corpus(root: Path) -> Path:
    files: dict[str, str | bytes] = {
        f"{TOPICS[i % len(TOPICS)]}/note-{i:03d}.txt": (
            f"Log {i}: the {TOPICS[i % len(TOPICS)]} entry for day {i} records wind force {i % 12} "
            f"and {i * 7 % 101} gallons of lamp oil.\n"
        )
        for i in range(N_NOTES)
    }
    files["a-late.md"] = b"\x00\x01 not yet text \x00"  # fails until it is fixed between kills
    make_tree(root, files)
    make_corrupt_pdf(root / "corrupt.pdf")  # fails every time: 'failed' in both end states
    make_binary_with_txt_suffix(root / "image.txt")
    return root


@dataclass(frozen=True)
class Moment:
    """When to kill: once ``ready`` holds for the run's progress, after ``delay`` more seconds."""

    phase: str
    ready: Callable[[Progress], bool]
    delay: float


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":  # dead, waiting for a reaper
            return True
        time.sleep(0.02)
    return False


def _kill(proc: subprocess.Popen[str]) -> bool:
    """SIGKILL the run (only the run, as the OOM killer would); False when it had already finished.
    Its parser worker must die with it, even mid-file."""
    if proc.poll() is not None:
        return False
    workers = _children(proc.pid)
    proc.kill()
    proc.wait()
    assert all(_gone(pid, within=10) for pid in workers), f"parser worker outlived the run: {workers}"
    return True


def _touch_later(path: Path) -> None:
    later = time.time() + 10
    os.utime(path, (later, later))


def test_sigkill_at_random_moments_then_resume_equals_one_clean_ingest(
    sqlite_settings: Settings, tmp_path: Path
) -> None:
    """On SQLite only, to stay within the CI budget (six starts of the CLI): PostgreSQL rolls back a
    killed client's open transaction on the server, and test_concurrency runs real writers on it."""
    settings = sqlite_settings
    rng = random.Random(SEED)
    corpus = _corpus(tmp_path / "corpus")
    total = N_NOTES + 3
    mid_docs, late_docs = rng.randint(1, total // 2), rng.randint(total // 2, total - 5)
    moments = [
        Moment("run started", lambda p: p.running > 0, rng.uniform(0.0, 1.5)),
        Moment("mid commits", lambda p: p.documents >= mid_docs, rng.uniform(0, 0.05)),
        Moment("late commits", lambda p: p.documents >= late_docs, 0.0),
        Moment("all chunks in", lambda p: p.chunks >= N_NOTES and p.running > 0, rng.uniform(0.0, 0.3)),
    ]
    watcher = Watcher(settings)
    log: list[str] = []
    try:
        for number, moment in enumerate(moments, start=1):
            proc = start_ingest(settings, [corpus])

            def ready(p: Progress, n: int = number, m: Moment = moment) -> bool:
                return p.runs >= n and m.ready(p)

            seen = watcher.wait_for(proc, ready)
            time.sleep(moment.delay)
            killed = _kill(proc)
            state = snapshot(settings)
            assert consistent(state) == [], f"after kill {number}"
            workspace = Workspace(settings)
            index_ok = workspace.indexes.check().ok
            workspace.close()
            log.append(
                f"kill {number} ({moment.phase}, +{moment.delay:.2f} s): "
                f"{'killed' if killed else 'had finished'}, "
                f"{sum(s[0] == 'ok' for s in state.values())} ok / {len(state)} documents in SQL, "
                f"{seen.chunks} chunks when triggered; index check {'ok' if index_ok else 'MISMATCH'}"
            )
            if number == 2:
                late = corpus / "a-late.md"
                assert state[str(late)][0] == "failed"  # recorded by a run that was then killed
                late.write_text("# Late entry\n\nThe relief keeper arrived by boat on the ninth day.\n")
                _touch_later(late)
            if number == 3:
                edited = corpus / "fog/note-005.txt"
                edited.write_text("Log 5, corrected: fog horn sounded for eleven hours without pause.\n")
                _touch_later(edited)
                (corpus / "ships/note-004.txt").unlink()
    finally:
        watcher.close()
        print("\n".join(["", *log]))

    # A writer killed inside atomic_write leaves a temporary beside the index; the next run removes it.
    (settings.index_dir / ".vectors.faiss.abc123.tmp").write_bytes(b"half an index")
    final = run_cli(settings, "ingest", str(corpus), "--json")
    assert final.returncode == 0, final.stderr
    check = run_cli(settings, "index", "check")
    assert check.returncode == 0 and check.stdout.startswith("ok:"), check.stdout + check.stderr

    statuses = run_statuses(settings)
    assert len(statuses) == len(moments) + 1 and statuses[-1] == "done", statuses
    assert "running" not in statuses and "interrupted" in statuses, statuses
    assert not list(settings.index_dir.glob("**/.*.tmp")), "a temporary index file was left behind"

    reference = Settings(home=tmp_path / "reference", models_cache=MODELS_CACHE)
    clean = Rag(reference).ingest([corpus])
    assert {Path(f.path).name for f in clean.failed} == {"corrupt.pdf", "image.txt"}
    expected, got = snapshot(reference), snapshot(settings)
    assert sorted(got) == sorted(expected)
    assert {p: s[:2] for p, s in got.items()} == {p: s[:2] for p, s in expected.items()}
    assert got == expected
    assert sum(len(s[2]) for s in got.values()) == clean.chunks


OPEN_WORKSPACE = """
import sys, time
from pathlib import Path
from rag.config import Settings
from rag.storage.database import Database
from rag.storage.database import Database
settings = Settings(home=Path(sys.argv[1]), database_url=sys.argv[2] or None)
print("imported", flush=True)
start = float(sys.argv[3])
while time.time() < start:
    time.sleep(0.001)
Database(settings)
print("opened", flush=True)
"""


def _open_workspace(settings: Settings, start_at: float = 0.0) -> subprocess.Popen[str]:
    url = "" if settings.database_url is None else settings.database_url
    return subprocess.Popen(
        [sys.executable, "-c", OPEN_WORKSPACE, str(settings.home), url, str(start_at)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_first_opens_at_the_same_moment_all_succeed(settings: Settings) -> None:
    """Three processes open one fresh workspace at the same instant (as two `rag ingest` and the API
    might): the schema is made once, and none fails with 'table already exists'."""
    start_at = time.time() + 3.0
    procs = [_open_workspace(settings, start_at) for _ in range(3)]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and "opened" in out, err[-2000:]


def test_a_kill_during_the_first_migration_leaves_a_workspace_that_opens(sqlite_settings: Settings) -> None:
    """pysqlite runs DDL outside a transaction, so a first open killed mid-migration used to leave
    half a schema ('table documents already exists' at every later open). Seeded kill moments
    across the migration window."""
    rng = random.Random(SEED)
    for trial in range(4):
        home = sqlite_settings.home.parent / f"home{trial}"
        settings = sqlite_settings.model_copy(update={"home": home})
        settings.__dict__.pop("home_dir", None)  # a cached_property of the copied settings
        proc = _open_workspace(settings)
        assert proc.stdout is not None and proc.stdout.readline() == "imported\n"
        time.sleep(rng.uniform(0.0, 0.25))
        proc.kill()
        proc.wait()
        Database(settings).close()  # opens (and migrates) without an error
        assert not list(home.glob(".rag.db.*")), "the temporary database was left behind"
