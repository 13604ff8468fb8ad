"""`rag ingest`: sync folders of documents into the workspace, with a progress bar on a terminal."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rag.cli.common import DbOpt, HomeOpt, JsonOpt, fail, open_rag, print_json, progress_bar


def bare_ray_flag(argv: list[str]) -> list[str]:
    """``--ray`` given without an address (last, or followed by another option) means ``--ray auto``:
    typer has no options with an optional value."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--ray" and (i + 1 == len(out) or out[i + 1].startswith("-")):
            out.insert(i + 1, "auto")
            break
    return out


def ingest_command(
    paths: Annotated[list[Path], typer.Argument(help="files or folders to sync")],
    include: Annotated[
        list[str] | None, typer.Option("--include", help="glob to include (repeatable)")
    ] = None,
    exclude: Annotated[
        list[str] | None, typer.Option("--exclude", help="glob to exclude (repeatable)")
    ] = None,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            metavar="[ADDRESS]",
            help="parse and embed on Ray Data: 'auto' (or --ray alone, last or before another option) "
            "starts a local Ray instance, an address joins a cluster (env RAG_RAY_ADDRESS)",
        ),
    ] = None,
    as_json: JsonOpt = False,
    home: HomeOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Add new files, re-chunk changed ones, skip unchanged ones, delete vanished ones.
    Unreadable files are reported and skipped, and so is a file with the same content as a document
    already ingested under another path; the exit code is 0 when the run completed."""
    rag = open_rag(home, database_url)
    try:
        with progress_bar("file", show=not as_json) as progress:
            summary = rag.ingest(paths, include, exclude, progress, ray or rag.settings.ray_address)
    except FileNotFoundError as exc:
        fail(str(exc), 2)
        return
    if as_json:
        print_json(summary.to_dict())
        return
    typer.echo(
        f"added {summary.added}, updated {summary.updated}, unchanged {summary.unchanged}, "
        f"deleted {summary.deleted}, failed {len(summary.failed)}, duplicate {len(summary.duplicates)}, "
        f"skipped {summary.skipped.get('unsupported', 0)} of unsupported types in {summary.seconds:.1f}s; "
        f"{summary.documents} documents, {summary.chunks} chunks in the workspace"
    )
    for f in summary.failed:
        typer.echo(f"  failed: {f.path}: {f.error}", err=True)
    for d in summary.duplicates:
        typer.echo(
            f"  duplicate: {d.path} has the same content as document {d.document_id} ({d.of_path}); "
            "not ingested again"
        )
