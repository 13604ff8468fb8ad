"""`python -m ingest PATH...` is `rag ingest PATH...`."""

import sys

import typer

from ingest.cli import bare_ray_flag, ingest_command

if __name__ == "__main__":
    sys.argv = bare_ray_flag(sys.argv)
    typer.run(ingest_command)
