"""The `rag` command. Each command builds Settings from env vars plus its flags, then calls one verb
of ``rag.core.Rag``; output is human-readable, or JSON with ``--json``."""

from __future__ import annotations

import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from rag.cli.common import (
    DbOpt,
    HomeOpt,
    JsonOpt,
    ModeOpt,
    fail,
    open_rag,
    print_json,
    progress_bar,
    settings_from,
)
from rag.cli.eval import eval_app
from rag.config import settings_problem
from rag.inputs import MAX_K


def user_error(exc: Exception) -> tuple[str, int] | None:
    """The one line (and exit code) a user sees for a failure that is theirs or their environment's
    to fix; None for anything else, which is a bug and keeps its traceback."""
    from sqlalchemy.exc import SQLAlchemyError

    from rag.index.embedder_record import EmbedderMismatch
    from rag.readonly import ReadOnly
    from rag.storage.engine import UNAVAILABLE_ERRORS, DatabaseUnavailable, failure_reason
    from rag.storage.writelock import WorkspaceBusy
    from rag.types import BadInput

    if isinstance(exc, BadInput):
        return str(exc), 2
    if (bad_setting := settings_problem(exc)) is not None:
        return bad_setting, 2
    if isinstance(exc, DatabaseUnavailable | WorkspaceBusy | ReadOnly | EmbedderMismatch):
        return str(exc), 1
    if isinstance(exc, UNAVAILABLE_ERRORS) and isinstance(exc, SQLAlchemyError):
        return f"the database failed: {failure_reason(exc)}", 1
    if isinstance(exc, OSError) and exc.strerror:
        where = f" {exc.filename}" if exc.filename else ""
        return f"cannot use{where}: {exc.strerror.lower()}", 1
    return None


class _Commands(TyperGroup):
    """Every command runs inside ``invoke``: the one place where known failures become one line."""

    def invoke(self, ctx: Any) -> Any:  # a click Context (typer vendors its own click)
        try:
            return super().invoke(ctx)
        except Exception as exc:
            known = user_error(exc)
            if known is None:
                raise
            typer.echo(f"error: {known[0]}", err=True)
            raise typer.Exit(known[1]) from None


app = typer.Typer(
    cls=_Commands, add_completion=False, no_args_is_help=True, help="sightline: answers that show their work."
)
docs_app = typer.Typer(no_args_is_help=True, help="List or remove ingested documents.")
index_app = typer.Typer(no_args_is_help=True, help="Verify or rebuild the vector index from SQL.")
app.add_typer(docs_app, name="docs")
app.add_typer(index_app, name="index")
app.add_typer(eval_app, name="eval")


@app.command()
def search(
    query: str,
    k: Annotated[int, typer.Option("--k", min=1, max=MAX_K)] = 5,
    path_prefix: Annotated[str | None, typer.Option(help="only documents under this path")] = None,
    doc_type: Annotated[str | None, typer.Option(help="only this type: pdf, md, html, ...")] = None,
    mode: ModeOpt = None,
    as_json: JsonOpt = False,
    home: HomeOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Retrieval only: the chunks an answer would be built from."""
    from rag.inputs import check_text
    from rag.retrieve.retriever import Filters

    check_text(query, "the query")  # before the models load
    sources = open_rag(home, database_url).search(query, k, Filters(path_prefix, doc_type), mode)
    if as_json:
        print_json({"results": [s.to_dict() for s in sources]})
        return
    if not sources:
        typer.echo("no results (is anything ingested? try `rag ingest data/`)")
    for s in sources:
        where = f"{s.path}" + (f" p.{s.page}" if s.page else "")
        typer.echo(f"[{s.rank}] {s.score:.3f}  {where}  chars {s.char_start}-{s.char_end}")
        typer.echo("    " + " ".join(s.text.split())[:240])


def answer_text(answer: Any, answer_already_shown: bool = False, stored: bool = True) -> str:
    """An Answer for the terminal: the answer, flagged sentences, sources with attention shares, and
    (when it was stored) how to see its report."""
    lines = [] if answer_already_shown else [answer.answer]
    lines.append("")
    h = answer.hallucination
    held_back = answer.held_back in ("risk", "names_a_source")  # a draft was written and held back
    if held_back:
        why = ("it only names a source" if answer.held_back == "names_a_source"
               else f"its risk {h.risk:.2f} was too high to stand behind")
        lines.append(f"(held back draft, {why}: {answer.draft})")
    for sent in answer.sentences:
        if sent.flagged:
            lines.append(f"! likely unsupported (risk {sent.risk:.2f}): {sent.text}")
    # the level beside the verdict: a trained risk is a probability under its training drafts' base
    # rate (most of a small generator's drafts were wrong), so 0.7 can still be below the flag level
    verdict = "FLAGGED" if h.flagged else "held back" if held_back else "ok"
    lines.append(f"hallucination risk {h.risk:.2f} ({verdict}; flag level {h.threshold:.2f}; {h.method})")
    lines.append("sources (share of the answer's attention):")
    for src in answer.sources:
        share = f"{100 * src.attention_mass:5.1f}%" if src.attention_mass is not None else "    -"
        where = Path(src.path).name + (f" p.{src.page}" if src.page else "")
        lines.append(f"  [{src.rank}] {share}  {where}  (score {src.score:.3f})")
    if stored:
        report = f"`rag report {answer.id} --html report.html`"
        lines.append(f"answer id {answer.id}: {report} for the full report")
    return "\n".join(lines)


@app.command()
def ask(
    question: str,
    k: Annotated[int | None, typer.Option("--k", min=1, max=MAX_K, help="sources to retrieve")] = None,
    path_prefix: Annotated[str | None, typer.Option(help="only documents under this path")] = None,
    doc_type: Annotated[str | None, typer.Option(help="only this type: pdf, md, html, ...")] = None,
    guided: Annotated[bool, typer.Option("--guided", help="guided decoding: by steps, each the least "
                                         "risky of a few candidates (slower; RAG_GUIDED=1)")] = False,
    as_json: JsonOpt = False,
    home: HomeOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Answer from your documents, with [n] citations, attention shares and flagged sentences."""
    from rag.inputs import check_text
    from rag.retrieve.retriever import Filters

    check_text(question, "the question")  # before the models load
    rag = open_rag(home, database_url)
    stored = rag.workspace.database.stores_answers
    if not stored:  # said before generating (after the load, which may refuse), so nothing is wasted
        rag.load_generator()
        where = rag.workspace.database.db_read_only
        typer.echo(f"note: answer not stored: the database {where} is read-only", err=True)
    stream = not as_json and sys.stdout.isatty()
    answer = rag.ask(
        question,
        k,
        Filters(path_prefix, doc_type),
        on_token=(lambda t: typer.echo(t, nl=False)) if stream else None,
        guided=guided or None,
    )
    if as_json:
        print_json(answer.to_dict())
        return
    typer.echo(answer_text(answer, answer_already_shown=stream, stored=stored))


@app.command()
def report(
    answer_id: str,
    html: Annotated[Path | None, typer.Option("--html", help="write the HTML report to this file")] = None,
    as_json: JsonOpt = False,
    home: HomeOpt = None,
    database_url: DbOpt = None,
) -> None:
    """The stored attribution report of an earlier answer."""
    from rag.report.html import render_html

    answer = open_rag(home, database_url).get_answer(answer_id)
    if answer is None:
        fail(f"no answer with id {answer_id}")
        return
    if html is not None:
        try:
            html.write_text(render_html(answer), encoding="utf-8")
        except OSError as exc:
            fail(f"cannot write the report to {html}: {(exc.strerror or str(exc)).lower()}")
        typer.echo(f"wrote {html}")
    elif as_json:
        print_json(answer.to_dict())
    else:
        typer.echo(answer_text(answer))


@app.command()
def attribute(
    question: Annotated[str, typer.Option("--question", help="the question that was asked")],
    answer: Annotated[str, typer.Option("--answer", help="the answer to check (written by any LLM)")],
    context: Annotated[Path | None, typer.Option("--context", help="a text file with the context")] = None,
    chunks: Annotated[str | None, typer.Option("--chunks", help="comma-separated chunk ids")] = None,
    as_json: JsonOpt = False,
    home: HomeOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Attribution of an answer written elsewhere, teacher-forced through our decoder."""
    from rag.inputs import MAX_CONTEXT_CHARS, read_text_file, valid_id

    if (context is None) == (chunks is None):
        fail("give exactly one of --context FILE or --chunks ID,...", 2)
    chunk_ids = None
    if chunks:
        try:
            chunk_ids = [int(c) for c in chunks.split(",") if c.strip()]
        except ValueError:
            fail(f"--chunks takes comma-separated chunk ids (whole numbers), not {chunks!r}", 2)
        if unknown := [c for c in chunk_ids or [] if not valid_id(c)]:
            fail(f"unknown chunk ids: {unknown[:10]}", 2)  # before the model loads; Rag says the same
    text = read_text_file(context, "the context", MAX_CONTEXT_CHARS) if context else None
    result = open_rag(home, database_url).attribute(question, answer, text, chunk_ids)
    if as_json:
        print_json(result.to_dict())
        return
    h = result.hallucination
    typer.echo(
        f"risk {h.risk:.2f} ({'FLAGGED' if h.flagged else 'ok'}; {h.method}, threshold {h.threshold:.2f})"
    )
    for src in result.sources:
        typer.echo(f"  [{src.rank}] {100 * (src.attention_mass or 0):5.1f}%  {src.path}")
    for sent in result.sentences:
        mark = "!" if sent.flagged else " "
        typer.echo(f" {mark} risk {sent.risk:.2f}  {sent.text}")


@app.command()
def calibrate(
    questions: Annotated[int, typer.Option("--questions", min=1, max=5000,
                                           help="questions to write from the documents")] = 200,
    seed: Annotated[int, typer.Option("--seed", help="which chunks are drawn")] = 0,
    status: Annotated[bool, typer.Option("--status", help="print the stored calibrations and stop")] = False,
    as_json: JsonOpt = False,
    home: HomeOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Fit the hallucination risk and abstention level to this workspace's documents and generator.

    Writes questions from your own chunks and asks each with its source and without; the detector
    fitted on those drafts is used by `ask` only where it beats the shipped one on held-out drafts.
    Interrupted, it resumes where it stopped."""
    from rag.evaluation.calibration import format_calibration, run_calibration, stored

    settings = settings_from(home=home, database_url=database_url)
    if status:
        folders = sorted(settings.calibration_dir.glob("*/detector.json"))
        found = [c for f in folders if (c := stored(settings.calibration_dir, f.parent.name))]
        if as_json:
            print_json([asdict(c) for c in found])
        else:
            none = "no calibration yet: run `rag calibrate`"
            typer.echo("\n\n".join(map(format_calibration, found)) or none)
        return
    rag = open_rag(home, database_url)
    with progress_bar("question", "calibrating") as bar:
        result = run_calibration(rag, questions, seed, bar, say=lambda m: typer.echo(m, err=True))
    if as_json:
        print_json(asdict(result))
    else:
        typer.echo(format_calibration(result))


@docs_app.command("list")
def docs_list(as_json: JsonOpt = False, home: HomeOpt = None, database_url: DbOpt = None) -> None:
    """Every document with its status; failed ones say why."""
    rows = [d.to_dict() for d in open_rag(home, database_url).documents()]
    if as_json:
        print_json({"documents": rows})
        return
    for r in rows:
        line = f"{r['id']:>5}  {r['status']:<6} {r['doc_type']:<5} {r['chunks']:>4} chunks  {r['path']}"
        typer.echo(line + (f"  ({r['error']})" if r["error"] else ""))
    typer.echo(f"{len(rows)} documents")


@docs_app.command("rm")
def docs_rm(document_id: int, home: HomeOpt = None, database_url: DbOpt = None) -> None:
    """Remove a document and its chunks from SQL and the indexes."""
    if not open_rag(home, database_url).delete_document(document_id):
        fail(f"no document with id {document_id} (see `rag docs list`)")
    typer.echo(f"removed document {document_id}")


@index_app.command("check")
def index_check(home: HomeOpt = None, database_url: DbOpt = None) -> None:
    """Exit 0 when the saved FAISS index holds exactly the chunks in SQL, 1 otherwise."""
    result = open_rag(home, database_url).workspace.indexes.check()
    typer.echo(result.describe())
    raise typer.Exit(0 if result.ok else 1)


@index_app.command("rebuild")
def index_rebuild(
    re_embed: Annotated[
        bool,
        typer.Option(
            "--re-embed", help="embed every chunk again with RAG_EMBEDDER first (after changing it)"
        ),
    ] = False,
    home: HomeOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Rebuild the index from the embeddings stored in SQL (no model needed), or with --re-embed from
    the chunk texts embedded again by the configured model."""
    rag = open_rag(home, database_url)
    if not re_embed:
        count = rag.workspace.indexes.rebuild()
        typer.echo(f"rebuilt the index: {count} chunks")
        return
    from rag.ingest.reembed import re_embed as run_re_embed

    ws = rag.workspace
    with progress_bar("chunk", "re-embedding") as progress:
        count = run_re_embed(ws.database, ws.write_lock, ws.indexes, ws.load_embedder, progress)
    typer.echo(f"re-embedded {count} chunks with '{rag.settings.embedder_id}' and rebuilt the index")


@app.command()
def bench(
    names: Annotated[list[str] | None, typer.Argument(help="ingest, decode, retrieve, load")] = None,
) -> None:
    """Run benchmarks (same as `python -m bench`): a table each, JSON in bench/results/."""
    from bench.__main__ import main as bench_main

    raise typer.Exit(bench_main(names or []))



def main() -> None:
    from ingest.cli import bare_ray_flag, ingest_command

    app.command("ingest")(ingest_command)
    if sys.argv[1:2] == ["ingest"]:
        sys.argv = bare_ray_flag(sys.argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="processes; more than 1 wants PostgreSQL")] = 1,
    home: HomeOpt = None,
    database_url: DbOpt = None,
) -> None:
    """The REST service (OpenAPI at /docs): FastAPI under uvicorn, the models loaded once per worker."""
    from api.main import serve as run_service

    run_service(settings_from(home=home, database_url=database_url), host, port, workers)
