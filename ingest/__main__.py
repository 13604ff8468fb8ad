"""`python -m ingest PATH...` is `rag ingest PATH...`."""

import sys

import typer

from ingest.cli import bare_ray_flag, ingest_command
from rag.config import settings_problem

if __name__ == "__main__":
    sys.argv = bare_ray_flag(sys.argv)
    try:
        typer.run(ingest_command)
    except Exception as exc:  # a bad RAG_* value: one line, not a traceback
        if (bad := settings_problem(exc)) is None:
            raise
        typer.echo(f"error: {bad}", err=True)
        sys.exit(2)
