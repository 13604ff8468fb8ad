"""Index snapshots (rag/index/snapshots.py): every save publishes a new folder, readers switch whole at
their next refresh, a snapshot a process still holds is never deleted, and a writer killed mid-save
leaves CURRENT naming a complete snapshot.

No model (tests/modelless.py): chunks go into SQL with small stored vectors (DIM) and unique words, the
way an ingest stores them, and into the in-memory indexes through the workspace, so that every load
reconciles against a real SQL table. Real FAISS, real SQLite/PostgreSQL, real processes where it is
about them.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time

import pytest

from rag.config import Settings
from rag.index import snapshots
from rag.index.lexical import LexicalIndex
from rag.index.vectors import INDEX_FILE, MANIFEST_FILE, VectorIndex
from rag.workspace import Workspace
from tests.conftest import REPO
from tests.modelless import DIM, add_document, finds, open_workspace


def on_disk(settings: Settings) -> list[str]:
    folder = settings.index_dir / snapshots.SNAPSHOTS_DIR
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def manifest_of(settings: Settings, name: str) -> dict[str, object]:
    path = settings.index_dir / snapshots.SNAPSHOTS_DIR / name / MANIFEST_FILE
    data: dict[str, object] = json.loads(path.read_text())
    return data


def test_a_second_workspace_switches_whole_at_its_next_refresh(settings: Settings) -> None:
    writer = open_workspace(settings)
    a = add_document(writer, "a", 3)
    writer.indexes.save()
    first = snapshots.current_name(settings.index_dir)
    assert first is not None and on_disk(settings) == [first]

    reader = Workspace(settings)  # its dimension comes from the snapshot's manifest
    assert finds(reader, "a", 0, a[0]) == (True, True)
    assert reader.indexes.loaded_snapshot == first

    b = add_document(writer, "b", 2)
    writer.indexes.save()
    c = add_document(writer, "c", 2)
    writer.indexes.save()
    latest = snapshots.current_name(settings.index_dir)
    assert latest is not None and snapshots.seq_of(latest) == snapshots.seq_of(first) + 2
    # The reader still holds the first; the one between, which nobody held, is gone.
    assert on_disk(settings) == [first, latest]
    assert finds(reader, "c", 1, c[1]) == (False, False)  # no refresh yet: what it loaded

    reader.indexes.refresh()
    assert reader.indexes.loaded_snapshot == latest
    manifest = manifest_of(settings, latest)
    lexical = manifest["lexical"]
    assert isinstance(lexical, dict)
    indexes = reader.indexes
    with indexes.reading():
        assert indexes.vectors.count == len(indexes.lexical) == manifest["count"] == len(a + b + c)
        assert indexes.lexical.checksum() == lexical["checksum"] == manifest["checksum"]
    assert finds(reader, "c", 1, c[1]) == (True, True)
    assert finds(reader, "b", 0, b[0]) == (True, True)

    writer.indexes.reconcile()  # a writer's open collects what nobody holds any more
    assert on_disk(settings) == [latest]
    assert reader.indexes.check().ok
    writer.close()
    reader.close()


def test_an_old_flat_index_opens_and_the_first_writer_republishes_it(settings: Settings) -> None:
    """Before snapshots the files lay directly in index/: they are read as they are (no rebuild from
    SQL) until a writer publishes them as the first snapshot and removes them."""
    ws = open_workspace(settings)
    ids = add_document(ws, "old", 4)
    index_dir = settings.index_dir
    ws.indexes.vectors.save(index_dir)  # exactly the files and folder the flat layout had
    ws.indexes.lexical.save(index_dir / snapshots.LEXICAL_DIR)
    ws.close()

    reader = Workspace(settings)
    assert reader.indexes.check().ok
    assert finds(reader, "old", 3, ids[3]) == (True, True)
    assert reader.indexes.loaded_snapshot is None and snapshots.current_name(index_dir) is None

    writer = Workspace(settings)
    writer.indexes.reconcile()
    name = snapshots.current_name(index_dir)
    assert name is not None and on_disk(settings) == [name]
    assert not (index_dir / INDEX_FILE).exists() and not (index_dir / snapshots.LEXICAL_DIR).exists()
    assert writer.indexes.check().ok
    reader.indexes.refresh()
    assert reader.indexes.loaded_snapshot == name and finds(reader, "old", 1, ids[1]) == (True, True)
    reader.close()
    writer.close()


# A reader process. Prints the snapshot it loaded, then obeys lines on stdin:
#   check TAG N: every chunk of document TAG (N chunks) is found by both searches, without refreshing
#   loop: refresh and search until the next line, then print the snapshots it went through
READER = """
import sys
sys.path.insert(0, sys.argv[3])
from pathlib import Path
from rag.config import Settings
from rag.workspace import Workspace
from tests.modelless import finds
from sqlalchemy import select
from rag.storage.orm import Chunk, Document
import threading

ws = Workspace(Settings(home=Path(sys.argv[1]), database_url=sys.argv[2] or None))
ws.indexes.vectors
print("loaded", ws.indexes.loaded_snapshot, flush=True)

def ids_of(tag):
    with ws.database.sessions() as s:
        q = select(Chunk.id).join(Document).where(Document.sha256 == tag).order_by(Chunk.ordinal)
        return list(s.scalars(q))

for line in sys.stdin:
    cmd, *args = line.split()
    if cmd == "check":
        tag, n = args[0], int(args[1])
        ids = ids_of(tag)
        bad = [i for i in range(n) if finds(ws, tag, i, ids[i]) != (True, True)]
        print("checked", ws.indexes.loaded_snapshot, bad, flush=True)
    elif cmd == "loop":
        seen, errors, stop = [ws.indexes.loaded_snapshot], [], threading.Event()
        a_ids = ids_of("a")
        def run():
            try:
                while not stop.is_set():
                    ws.indexes.refresh()
                    if seen[-1] != ws.indexes.loaded_snapshot:
                        seen.append(ws.indexes.loaded_snapshot)
                    with ws.indexes.reading():
                        vectors, lexical = ws.indexes.vectors, ws.indexes.lexical
                        assert sorted(vectors.ids().tolist()) == sorted(lexical.ids().tolist())
                    assert finds(ws, "a", 2, a_ids[2]) == (True, True)
            except BaseException as exc:
                errors.append(repr(exc))
        t = threading.Thread(target=run)
        t.start()
        sys.stdin.readline()
        stop.set()
        t.join()
        print("error", errors[0] if errors else "seen", " ".join(seen), flush=True)
"""


def start_reader(settings: Settings) -> subprocess.Popen[str]:
    url = "" if settings.database_url is None else settings.database_url
    return subprocess.Popen(
        [sys.executable, "-c", READER, str(settings.home), url, str(REPO)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def ask(proc: subprocess.Popen[str], line: str) -> str:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()
    answer = proc.stdout.readline()
    assert answer, proc.stderr.read() if proc.stderr else ""
    return answer.strip()


def loaded(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    assert line[:1] == ["loaded"], proc.stderr.read() if proc.stderr else line
    return line[1]


@pytest.mark.slow  # three processes
def test_snapshots_held_by_reader_processes_stay_until_they_switch_or_die(settings: Settings) -> None:
    writer = open_workspace(settings)
    add_document(writer, "a", 5)
    writer.indexes.save()
    holder = start_reader(settings)  # holds A and never refreshes
    looper = start_reader(settings)  # refreshes and searches all the while
    try:
        a = loaded(holder)
        assert loaded(looper) == a
        assert looper.stdin is not None
        looper.stdin.write("loop\n")
        looper.stdin.flush()
        published = [a]
        for tag in "bcdef":
            add_document(writer, tag, 5)
            writer.indexes.save()
            published.append(str(snapshots.current_name(settings.index_dir)))
            assert a in on_disk(settings), "a snapshot a process holds was collected"
        assert ask(holder, "check a 5") == f"checked {a} []"  # searching what it loaded, unchanged
        said = ask(looper, "").split()
        assert said[1] == "seen", said
        seen = said[2:]
        print(f"\nthe refreshing reader went through {len(seen)} of {len(published)} snapshots")
        assert seen[0] == a and seen[-1] == published[-1], (seen, published)
        assert all(name in published for name in seen)
        assert [snapshots.seq_of(n) for n in seen] == sorted(snapshots.seq_of(n) for n in seen)
        assert ask(looper, "check f 5") == f"checked {published[-1]} []"

        assert {a, published[-1]} <= set(on_disk(settings)) <= set(published)
        holder.kill()  # as the OOM killer would: its lock goes with it
        holder.wait()
        writer.indexes.reconcile()
        assert on_disk(settings) == [published[-1]]
    finally:
        for proc in (holder, looper):
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    assert writer.indexes.check().ok
    writer.close()


TRIALS = 4
# Publishes the same indexes again and again, as fast as it can, until killed.
SAVER = """
import sys
sys.path.insert(0, sys.argv[3])
from pathlib import Path
from rag.config import Settings
from tests.modelless import open_workspace
ws = open_workspace(Settings(home=Path(sys.argv[1]), database_url=sys.argv[2] or None))
ws.indexes.vectors
print("saving", flush=True)
while True:
    ws.indexes.save()
"""


@pytest.mark.slow  # starts and SIGKILLs writer processes
def test_a_writer_killed_mid_save_leaves_current_complete(sqlite_settings: Settings) -> None:
    """Killed while a new snapshot folder is being filled: soon after it appears, at seeded moments
    within the ~30 ms a save of these chunks takes here. The partial folder is ignored by readers and
    collected by the next writer."""
    settings = sqlite_settings
    ws = open_workspace(settings)
    for tag in ("x", "y", "z"):
        add_document(ws, tag, 5000)  # big enough that a save takes a while (~30 ms here)
    ws.indexes.save()
    ws.close()
    rng = random.Random(int(os.environ.get("RAG_CRASH_SEED", "5")))
    partial_left = 0
    for _ in range(TRIALS):
        proc = subprocess.Popen(
            [sys.executable, "-c", SAVER, str(settings.home), "", str(REPO)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None and proc.stdout.readline() == "saving\n"
            for _ in range(rng.randint(1, 3)):  # let it finish a save or two first
                before = snapshots.current_name(settings.index_dir)
                while snapshots.current_name(settings.index_dir) == before and proc.poll() is None:
                    time.sleep(0.005)
            current = snapshots.current_name(settings.index_dir)
            while proc.poll() is None:  # wait for the next folder to be started, then kill
                if any(n > str(current) for n in on_disk(settings)):
                    time.sleep(rng.uniform(0.0, 0.015))
                    break
                time.sleep(0.001)
        finally:
            proc.kill()
            proc.wait()
        assert proc.returncode == -9, proc.stderr.read() if proc.stderr else ""
        current = snapshots.current_name(settings.index_dir)
        assert current is not None
        folder = snapshots.folder_of(settings.index_dir, current)
        assert (folder / MANIFEST_FILE).exists() and (folder / snapshots.LEXICAL_DIR / MANIFEST_FILE).exists()
        partial_left += any(n > current for n in on_disk(settings))
        reader = Workspace(settings)
        indexes = reader.indexes
        assert indexes.check().ok, indexes.check().describe()
        assert indexes.vectors.count == len(indexes.lexical) == 15000 and indexes.loaded_snapshot == current
        reader.close()
    print(f"\n{partial_left} of {TRIALS} kills left a partly written snapshot behind")
    assert partial_left > 0, "no kill landed inside a save"

    writer = Workspace(settings)
    writer.indexes.reconcile()  # in step with SQL: nothing saved, the partial folders collected
    assert on_disk(settings) == [snapshots.current_name(settings.index_dir)]
    assert writer.indexes.check().ok
    writer.close()


def test_without_leases_the_newest_snapshots_are_kept_by_age(sqlite_settings: Settings) -> None:
    """The fallback for filesystems whose locks cannot be trusted: a snapshot a reader holds is not
    protected, the newest ``index_keep_snapshots`` are."""
    settings = sqlite_settings.model_copy(update={"index_keep_snapshots": 2, "index_trust_leases": False})
    writer = open_workspace(settings)
    add_document(writer, "a", 2)
    writer.indexes.save()
    reader = Workspace(settings)
    assert reader.indexes.vectors.count == 2
    held = reader.indexes.loaded_snapshot
    names = []
    for tag in "bcd":
        add_document(writer, tag, 2)
        writer.indexes.save()
        names.append(snapshots.current_name(settings.index_dir))
    assert held not in on_disk(settings) and on_disk(settings) == names[-2:]
    reader.indexes.refresh()
    assert reader.indexes.loaded_snapshot == names[-1] and reader.indexes.vectors.count == 8
    writer.close()
    reader.close()


def test_an_unpublished_folder_is_never_read(sqlite_settings: Settings) -> None:
    """A folder newer than CURRENT (a save that never finished) is invisible to readers."""
    ws = open_workspace(sqlite_settings)
    ids = add_document(ws, "a", 2)
    ws.indexes.save()
    current = snapshots.current_name(sqlite_settings.index_dir)
    lease = snapshots.create(sqlite_settings.index_dir)  # as a killed writer leaves it
    assert lease.name is not None and lease.name > str(current)
    VectorIndex(lease.folder, DIM, sqlite_settings.embedder, sqlite_settings).save()
    LexicalIndex().save(lease.folder / snapshots.LEXICAL_DIR)
    lease.release()
    reader = Workspace(sqlite_settings)
    assert finds(reader, "a", 1, ids[1]) == (True, True) and reader.indexes.loaded_snapshot == current
    assert reader.indexes.check().ok
    ws.indexes.reconcile()
    assert on_disk(sqlite_settings) == [current]
    ws.close()
    reader.close()
