"""One writer per workspace at a time: across processes by ``flock`` on ``write.lock`` in the home
(a second `rag ingest` waits, saying why), and across the threads of one process."""

from __future__ import annotations

import fcntl
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO


class WorkspaceBusy(RuntimeError):
    """Another process holds the write lock and the caller chose not to wait."""


class WriteLock:
    def __init__(self, home: Path, check_writable: Callable[[], None]) -> None:
        """``check_writable`` refuses a read-only workspace (rag.storage.database), before the lock file is
        even opened: in a read-only home it could not be created."""
        self.home = home
        self._check_writable = check_writable
        self._thread = threading.RLock()
        self._depth = 0

    @contextmanager
    def held(self, wait: bool = True, notice: TextIO | None = sys.stderr) -> Iterator[None]:
        """Hold the lock; re-entrant within a thread. ``wait=False`` raises WorkspaceBusy instead of
        waiting; ``notice`` is told when another process makes us wait."""
        self._check_writable()
        if not self._thread.acquire(blocking=wait):
            raise WorkspaceBusy(f"another writer is busy with {self.home}")
        try:
            self._depth += 1
            if self._depth > 1:
                yield
                return
            fd = os.open(self.home / "write.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    if not wait:
                        raise WorkspaceBusy(f"another process is writing to {self.home}") from None
                    if notice is not None:
                        print(f"waiting for another writer to {self.home} to finish…", file=notice)
                    fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
        finally:
            self._depth -= 1
            self._thread.release()
