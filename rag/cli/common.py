"""What every command-line shell shares: the workspace options, opening ``Rag`` from env vars plus
flags, ``--json`` printing, and errors that exit with a code. ``rag.cli.main`` and ``ingest.cli`` both
import it, so the arrow points one way (``rag.cli.main`` -> ``ingest.cli`` -> here)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Protocol

import typer

from rag.config import Settings
from rag.types import RETRIEVAL_MODES

HomeOpt = Annotated[Path | None, typer.Option("--home", help="workspace folder (env RAG_HOME)")]
DbOpt = Annotated[str | None, typer.Option("--database-url", help="SQLAlchemy URL (env RAG_DATABASE_URL)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]
_MODE_HELP = f"retrieval: {', '.join(RETRIEVAL_MODES)} (default: RAG_RETRIEVAL_MODE, hybrid)"
ModeOpt = Annotated[str | None, typer.Option("--mode", help=_MODE_HELP)]


def settings_from(**flags: Any) -> Settings:
    """Env vars, overridden by the flags the user actually gave."""
    return Settings(**{k: v for k, v in flags.items() if v is not None})


def open_rag(home: Path | None, database_url: str | None, **flags: Any) -> Any:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    from rag.core import Rag

    return Rag(settings_from(home=home, database_url=database_url, **flags))


class Progress(Protocol):
    def __call__(self, done: int, total: int, item: str = "") -> None: ...


@contextmanager
def progress_bar(unit: str, desc: str | None = None, show: bool = True) -> Iterator[Progress | None]:
    """A bar on stderr that a long command moves with ``(done, total[, item])`` (the item's name is
    shown beside it); None, and no bar, when ``show`` is off or stderr is not a terminal."""
    if not (show and sys.stderr.isatty()):
        yield None
        return
    from tqdm import tqdm

    bar = tqdm(unit=unit, file=sys.stderr, dynamic_ncols=True, desc=desc)

    def progress(done: int, total: int, item: str = "") -> None:
        bar.total = total
        bar.n = done
        bar.set_postfix_str(Path(item).name[-40:] if item else "", refresh=False)
        bar.refresh()

    try:
        yield progress
    finally:
        bar.close()


def print_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, ensure_ascii=False, default=str))


def fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)
