"""Parse files in a separate, persistent process, with a time limit per file.

Why a process: a parser can hang (a pathological PDF or regex), blow up in memory (a zip bomb inside a
DOCX), or crash the interpreter (a C extension). Any of these must cost one file, not the ingest run,
and a thread cannot be stopped. The worker is a plain ``python -m rag.parse.worker`` that imports only
the loaders, so it starts in about a second; it serves file after file, and only when a file runs
over the limit (or kills the worker) is it killed and a fresh one started. Its address space is
capped, so a memory bomb fails as that file's ``LoadError`` instead of taking the machine down.

Protocol: the parent sends a path (``str``) on one pipe; the worker answers on another with
``("ok", LoadedDocument)`` or ``("error", reason)``, after a first ``("ready", pid)``. The worker's
stdout goes to /dev/null so that a stray print in a parser can never corrupt ``rag ingest --json``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from types import TracebackType
from typing import Any

from rag.types import LoadedDocument, LoadError

DEFAULT_MEMORY_LIMIT = 4 << 30  # address space of the worker: far above any file under max_file_bytes
_START_TIMEOUT_S = 120.0  # imports only, but a loaded machine can be slow


class LoadWorker:
    """``load(path)`` in a child process that is replaced when it overruns ``timeout_s`` or dies."""

    def __init__(
        self, timeout_s: float, memory_limit: int | None = DEFAULT_MEMORY_LIMIT, max_chars: int | None = None
    ) -> None:
        self.timeout_s = timeout_s
        self.memory_limit = memory_limit
        self.max_chars = max_chars  # longer extracted text fails in the worker, never crosses the pipe
        self._proc: subprocess.Popen[bytes] | None = None
        self._requests: Connection | None = None
        self._replies: Connection | None = None
        self.started = 0  # worker processes started: more than one means a file timed out or crashed

    def start(self) -> None:
        """Start the worker (if none is running) and wait until it has imported the parsers, so the
        import time never counts against a file's limit."""
        if self._proc is not None and self._proc.poll() is None:
            return
        self._discard()
        request_r, request_w = os.pipe()
        reply_r, reply_w = os.pipe()
        limits = [str(self.memory_limit or 0), str(self.max_chars or 0), str(self.timeout_s)]
        args = [sys.executable, "-m", "rag.parse.worker", str(request_r), str(reply_w), *limits]
        try:
            self._proc = subprocess.Popen(
                args, pass_fds=(request_r, reply_w), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
            )
        finally:
            os.close(request_r)
            os.close(reply_w)
        self.started += 1
        self._requests = Connection(request_w, readable=False)
        self._replies = Connection(reply_r, writable=False)
        if not self._replies.poll(_START_TIMEOUT_S):
            self._discard()
            raise RuntimeError(f"the parser process did not start within {_START_TIMEOUT_S:.0f} s")
        try:
            kind, _ = self._replies.recv()
        except (EOFError, OSError) as e:
            code = self._discard()
            raise RuntimeError(f"the parser process failed to start ({_describe_exit(code)})") from e
        if kind != "ready":
            self._discard()
            raise RuntimeError(f"the parser process said {kind!r} instead of 'ready'")

    def load(self, path: Path) -> LoadedDocument:
        """Like `rag.parse.formats.load`, but a file that takes longer than ``timeout_s`` to parse, or that
        crashes the parser, raises `LoadError` saying so; the next call gets a fresh worker."""
        self.start()
        assert self._requests is not None and self._replies is not None
        started = time.monotonic()
        try:
            self._requests.send(str(path))
            ready = self._replies.poll(self.timeout_s)
        except (BrokenPipeError, EOFError, OSError):  # died between files
            ready = True
        if not ready:
            self._discard()
            raise LoadError(
                f"timed out: parsing took longer than {self.timeout_s:g} s (file_timeout_s), "
                "so the parser was stopped"
            )
        try:
            kind, payload = self._replies.recv()
        except (EOFError, OSError) as e:
            code = self._discard()
            waited = time.monotonic() - started
            raise LoadError(
                f"the parser crashed on this file after {waited:.1f} s ({_describe_exit(code)})"
            ) from e
        if kind == "ok":
            assert isinstance(payload, LoadedDocument)
            return payload
        raise LoadError(str(payload))

    def interrupt(self) -> None:
        """Kill the worker from another thread (the one in ``load`` then gets a LoadError); the
        pipes are left to ``load``/``close``, which own them."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()

    def close(self) -> None:
        """Stop the worker: closing its request pipe ends its loop; kill it if it does not exit."""
        self._discard(graceful=True)

    def _discard(self, graceful: bool = False) -> int | None:
        """Stop the worker and close the pipes; returns its exit status when there was one."""
        proc, self._proc = self._proc, None
        for conn in (self._requests, self._replies):
            if conn is not None:
                conn.close()
        self._requests = self._replies = None
        if proc is None:
            return None
        if graceful:
            try:
                return proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
        proc.kill()
        return proc.wait()

    def __enter__(self) -> LoadWorker:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "no exit status"
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        hint = ", perhaps out of memory" if -code == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exit status {code}"


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this worker when the ingest process dies: an idle worker notices the
    closed pipe anyway, but one stuck in a pathological file would otherwise outlive a killed run."""
    parent = os.getppid()
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the closed pipe still ends an idle worker
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def too_long(chars: int, limit: int) -> str:
    return (
        f"the file's text is {chars:,} characters once extracted, over the {limit:,}-character limit "
        "(max_file_chars)"
    )


def _serve(
    requests: Connection, replies: Connection, memory_limit: int, max_chars: int, timeout_s: float = 0.0
) -> None:
    """The worker's loop: one reply per request until the parent closes the request pipe. OCR, which
    can take minutes on a long scan, is given a little less than ``timeout_s`` per file, so that it
    stops and says how far it got before the parent kills the worker (rag.parse.formats.ocr)."""
    import logging

    _die_with_parent()

    if memory_limit:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))
    logging.getLogger("pypdf").setLevel(logging.ERROR)  # the reason reaches the user as a LoadError

    from rag.parse.formats import load
    from rag.parse.formats.ocr import set_budget

    replies.send(("ready", os.getpid()))
    while True:
        try:
            path = requests.recv()
        except (EOFError, OSError):
            return
        reply: tuple[str, Any]
        set_budget(timeout_s * 0.9 - 0.5 if timeout_s > 0 else None)
        try:
            doc = load(Path(path))
            over = 0 < max_chars < len(doc.text)
            reply = ("error", too_long(len(doc.text), max_chars)) if over else ("ok", doc)
            del doc
        except LoadError as e:
            reply = ("error", str(e))
        except MemoryError:
            reply = ("error", "ran out of memory while parsing (is it a compression bomb?)")
        except Exception as e:  # a parser bug must cost this file only
            reply = ("error", f"the parser failed: {type(e).__name__}: {e}")
        try:
            replies.send(reply)
        except MemoryError:
            replies.send(("error", "ran out of memory while sending the extracted text"))


if __name__ == "__main__":
    _serve(
        Connection(int(sys.argv[1]), writable=False),
        Connection(int(sys.argv[2]), readable=False),
        int(sys.argv[3]) if len(sys.argv) > 3 else 0,
        int(sys.argv[4]) if len(sys.argv) > 4 else 0,
        float(sys.argv[5]) if len(sys.argv) > 5 else 0.0,
    )
