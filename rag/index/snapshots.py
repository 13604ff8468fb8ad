"""Published index snapshots: every save is a new folder that never changes, and one pointer file
names the current one.

Layout under ``RAG_HOME/index``::

    CURRENT                    the current snapshot's name; replaced by temp file + rename
    snapshots/<seq>-<id>/      vectors.faiss, manifest.json, lexical/{bm25.npz, manifest.json}, lease

A save fills a fresh folder, fsyncs it, then renames a new ``CURRENT`` into place. A reader reads
``CURRENT`` and loads that one folder, so its vectors and its BM25 always come from the same save, and
a writer killed mid-save leaves a folder that nothing names, collected later.

Who still uses a snapshot is told by ``flock``: a process holds a shared lock on the ``lease`` file of
the snapshot it loaded, and collection deletes a folder only when it gets the exclusive lock without
waiting. A killed process's locks go with it. ``flock`` needs no write access, so a read-only mount
can pin a snapshot too. Where locks cannot be trusted (some network filesystems), collection can keep
the newest few snapshots by age instead (``index_keep_snapshots``, ``index_trust_leases``).

A workspace of the old flat layout (the files directly in ``index/``, no ``CURRENT``) reads as one
snapshot without a lease, until the first save publishes a real one and removes the old files.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import shutil
import weakref
from pathlib import Path

from rag.index.vectors import INDEX_FILE, MANIFEST_FILE, atomic_write

CURRENT_FILE = "CURRENT"
SNAPSHOTS_DIR = "snapshots"
LEASE_FILE = "lease"
LEXICAL_DIR = "lexical"  # inside a snapshot (and in the old flat layout)
_NAME = re.compile(r"\d{8,}-[0-9a-f]{8}")
_TRASH = ".trash-"  # a folder being deleted: renamed first, so no reader can pin it any more


class Lease:
    """A shared lock on one snapshot, held while this process uses what it loaded from it. ``name``
    None is the old flat layout or no index at all (``folder`` is then ``index/`` itself)."""

    def __init__(self, name: str | None, folder: Path, fd: int | None) -> None:
        self.name = name
        self.folder = folder
        self._release = weakref.finalize(self, os.close, fd) if fd is not None else None

    def release(self) -> None:
        """Let the snapshot go (closing the file drops the lock); safe to call twice."""
        if self._release is not None:
            self._release()


def seq_of(name: str) -> int:
    return int(name.split("-", 1)[0])


def current_name(index_dir: Path) -> str | None:
    """The name ``CURRENT`` holds, or None when nothing was published (or it is not a name). Read,
    not stat'ed: on NFS an open revalidates the file (close-to-open), a stat may be cached."""
    try:
        name = (index_dir / CURRENT_FILE).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return name if _NAME.fullmatch(name) else None


def folder_of(index_dir: Path, name: str | None) -> Path:
    return index_dir if name is None else index_dir / SNAPSHOTS_DIR / name


def current_folder(index_dir: Path) -> Path:
    """Where the next reader loads from: the current snapshot, or ``index/`` itself when none is."""
    return folder_of(index_dir, current_name(index_dir))


def pin(index_dir: Path) -> Lease:
    """Take a shared lock on the current snapshot. Between reading ``CURRENT`` and locking, a writer
    may publish a newer one and collect this one: then the lease file is gone (or is no longer the
    file at that path) and ``CURRENT`` has moved on, so read it again."""
    for _ in range(50):
        name = current_name(index_dir)
        if name is None:
            return Lease(None, index_dir, None)
        folder = folder_of(index_dir, name)
        try:
            fd = os.open(folder / LEASE_FILE, os.O_RDONLY)
        except FileNotFoundError:
            if current_name(index_dir) == name:  # named but gone (deleted by hand): loads as empty
                return Lease(name, folder, None)
            continue
        fcntl.flock(fd, fcntl.LOCK_SH)  # waits only while a collector is renaming it away
        try:
            same = os.stat(folder / LEASE_FILE).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return Lease(name, folder, fd)
        os.close(fd)
    return Lease(current_name(index_dir), current_folder(index_dir), None)


def create(index_dir: Path) -> Lease:
    """A new, empty snapshot folder, leased before anything is written into it. The writer (one at a
    time, under the write lock) numbers it after the highest snapshot there is."""
    snapshots = index_dir / SNAPSHOTS_DIR
    snapshots.mkdir(parents=True, exist_ok=True)
    names = [p.name for p in snapshots.iterdir() if _NAME.fullmatch(p.name)]
    current = current_name(index_dir)
    seq = max(map(seq_of, [*names, *([current] if current else [])]), default=0) + 1
    name = f"{seq:08d}-{secrets.token_hex(4)}"
    folder = snapshots / name
    folder.mkdir()
    fd = os.open(folder / LEASE_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_SH)
    return Lease(name, folder, fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(index_dir: Path, lease: Lease) -> None:
    """Make a fully written snapshot the current one: its folder is on disk first, then the pointer
    is swapped, so a crash at any point leaves ``CURRENT`` naming a complete snapshot."""
    assert lease.name is not None
    for folder in (lease.folder / LEXICAL_DIR, lease.folder, lease.folder.parent):
        _fsync_dir(folder)
    atomic_write(index_dir / CURRENT_FILE, f"{lease.name}\n".encode())
    _fsync_dir(index_dir)


def collect(index_dir: Path, keep: int = 1, trust_leases: bool = True) -> list[str]:
    """Delete the snapshots no process uses; returns their names. Kept: the current one, the
    ``keep - 1`` newest complete ones before it, and (when leases are trusted) any that a process
    holds. Run by the writer, under the write lock, so no snapshot is being written meanwhile."""
    current = current_name(index_dir)
    snapshots = index_dir / SNAPSHOTS_DIR
    if current is None or not snapshots.is_dir():
        return []
    for name in (INDEX_FILE, MANIFEST_FILE):  # the old flat layout, superseded
        (index_dir / name).unlink(missing_ok=True)
    shutil.rmtree(index_dir / LEXICAL_DIR, ignore_errors=True)
    names = sorted((p.name for p in snapshots.iterdir() if _NAME.fullmatch(p.name)), key=seq_of)
    older = [n for n in names if seq_of(n) < seq_of(current) and (snapshots / n / MANIFEST_FILE).exists()]
    kept = {current, *(older[-(keep - 1) :] if keep > 1 else [])}
    removed = []
    for name in names:
        if name not in kept and _take(snapshots / name, trust_leases):
            removed.append(name)
    for trash in snapshots.glob(f"{_TRASH}*"):  # a collection killed mid-delete
        shutil.rmtree(trash, ignore_errors=True)
    return removed


def _take(folder: Path, trust_leases: bool) -> bool:
    """Delete ``folder`` unless a process holds its lease. It is renamed away while the exclusive lock
    is held, so a reader that opened the lease just before sees that it lost the race."""
    fd = None
    if trust_leases:
        # no lease file: a writer killed between mkdir and the lease, so nobody can hold it.
        # O_RDWR: over NFS flock is emulated with POSIX locks, and an exclusive one needs write access.
        with contextlib.suppress(FileNotFoundError):
            fd = os.open(folder / LEASE_FILE, os.O_RDWR)
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
    trash = folder.with_name(_TRASH + folder.name)
    try:
        folder.rename(trash)
    finally:
        if fd is not None:
            os.close(fd)
    shutil.rmtree(trash, ignore_errors=True)
    return True
