"""What every command-line shell shares: the workspace options, opening ``Rag`` from env vars plus
flags, ``--json`` printing, and errors that exit with a code. ``rag.cli`` and ``ingest.cli`` both
import it, so the arrow points one way (``rag.cli`` -> ``ingest.cli`` -> here)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

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


def print_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, ensure_ascii=False, default=str))


def fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)
