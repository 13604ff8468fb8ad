"""A reader-writer lock for the in-memory indexes: searches share it, index writes take it alone.

FAISS and the BM25 segments are not safe to read while they are being changed (a BM25 search walks
the delta dict that ``add`` grows; a FAISS add may reallocate the arrays a search is scanning), yet
searches on the retrieval pool must not queue behind one another. Writer-preferring, so a steady
stream of searches cannot starve an ingest. The writer side is re-entrant (``IndexSet.save`` runs
inside ``reconcile``), and a thread that holds it may also read; the reader side is re-entrant too.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class RWLock:
    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0  # threads holding the read side (each counted once)
        self._writer: int | None = None  # ident of the thread holding the write side
        self._write_depth = 0
        self._writers_waiting = 0
        self._local = threading.local()  # per-thread read depth

    @contextmanager
    def read(self) -> Iterator[None]:
        me = threading.get_ident()
        depth = getattr(self._local, "depth", 0)
        if depth == 0 and self._writer != me:
            with self._cond:
                while self._writer is not None or self._writers_waiting:
                    self._cond.wait()
                self._readers += 1
        self._local.depth = depth + 1
        try:
            yield
        finally:
            self._local.depth = depth
            if depth == 0 and self._writer != me:
                with self._cond:
                    self._readers -= 1
                    if self._readers == 0:
                        self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._cond:
            if self._writer == me:
                self._write_depth += 1
            else:
                if getattr(self._local, "depth", 0):
                    raise RuntimeError("a reader cannot upgrade to the write side (it would deadlock)")
                self._writers_waiting += 1
                try:
                    while self._writer is not None or self._readers:
                        self._cond.wait()
                finally:
                    self._writers_waiting -= 1
                self._writer, self._write_depth = me, 1
        try:
            yield
        finally:
            with self._cond:
                self._write_depth -= 1
                if self._write_depth == 0:
                    self._writer = None
                    self._cond.notify_all()
