"""`python -m ingest PATH...` is `rag ingest PATH...`."""

import typer

from ingest.cli import ingest_command

if __name__ == "__main__":
    typer.run(ingest_command)
