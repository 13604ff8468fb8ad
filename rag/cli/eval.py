"""`rag eval`: detector quality, detector training, answer quality and retrieval quality against
labelled data (more evaluations add commands here). Each command loads its evaluation lazily, so the
other `rag` commands never import it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from rag.cli.common import HomeOpt, JsonOpt, fail, print_json, settings_from

eval_app = typer.Typer(no_args_is_help=True, help="Evaluate (and train) against labelled data.")


def _run_eval(run: Callable[[], Any], to_text: Callable[[Any], str], as_json: bool) -> None:
    """Run an evaluation with the model loaders quiet; bad data exits 2 with its reason."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        result = run()
    except (ValueError, OSError, KeyError) as exc:
        fail(str(exc), 2)
        return
    if as_json:
        print_json(result.to_dict())
    else:
        typer.echo(to_text(result))


@eval_app.command("detect")
def eval_detect(
    file: Annotated[Path, typer.Argument(help="JSONL: {question, context, response, hallucinated}")],
    split: Annotated[str | None, typer.Option(help="only lines with this 'split' (train/val/test)")] = None,
    detector: Annotated[Path | None, typer.Option(help="detector JSON (default: the generator's)")] = None,
    as_json: JsonOpt = False,
    home: HomeOpt = None,
) -> None:
    """Detector AUROC and F1 on teacher-forced lines, beside answer length and 1 - lookback, per set."""
    from rag.evaluation.detect import evaluate_file, format_report

    settings = settings_from(home=home)
    _run_eval(lambda: evaluate_file(file, settings, detector, split), format_report, as_json)


@eval_app.command("detect-sets")
def eval_detect_sets(
    out: Annotated[Path, typer.Argument(help="folder for the JSONL sets")],
    data: Annotated[Path | None, typer.Option(help="folder with halueval_qa/ and squad_v2_dev/")] = None,
    squad_n: Annotated[int, typer.Option(help="SQuAD questions per SQuAD-derived set")] = 600,
) -> None:
    """Write the teacher-forced HaluEval / SQuAD sets (rag.evaluation.detect_data) for `rag eval detect`."""
    from rag.evaluation.detect_data import SHARED_DATA, write_all

    for name, n in write_all(data or SHARED_DATA, out, squad_n).items():
        typer.echo(f"{out / name}.jsonl  {n} lines")


@eval_app.command("train-detector")
def eval_train_detector(
    own: Annotated[Path, typer.Option(help="drafts from `rag eval squad --split train --save DIR`")],
    val: Annotated[Path, typer.Option(help="drafts from `rag eval squad --split val --save DIR`")],
    out: Annotated[Path | None, typer.Option(help="detector file (default: the shipped one)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Train and calibrate the detector on the generator's own answers; ship it only if it beats both
    baselines on the validation drafts (else the untrained score ships)."""
    from rag.evaluation.training import format_train, train_own

    _run_eval(lambda: train_own(own, val, out), format_train, as_json)


@eval_app.command("squad")
def eval_squad(
    file: Annotated[Path, typer.Argument(
        help="SQuAD-2 JSON or JSONL, or JSONL lines {question, context|contexts, answers}")],
    n: Annotated[int, typer.Option("--n", min=1, help="questions to sample")] = 300,
    seed: Annotated[int, typer.Option(help="sampling seed")] = 0,
    k: Annotated[int, typer.Option("--k", min=1, max=50, help="recall@k of the gold paragraph")] = 5,
    split: Annotated[str, typer.Option(help="only articles of this split: train or val (default all)")] = "",
    save: Annotated[Path | None, typer.Option(help="keep the drafts' features in this folder")] = None,
    as_json: JsonOpt = False,
    home: HomeOpt = None,
) -> None:
    """Useful answers, abstention, and own-answer risk AUROC beside its two baselines, with 95% CIs."""
    from rag.evaluation.squad import evaluate, format_report

    if split not in ("", "train", "val"):
        fail("--split is train or val", 2)
    settings = settings_from(home=home)
    _run_eval(lambda: evaluate(file, settings, n=n, seed=seed, k=k, split=split, save=save), format_report,
              as_json)


@eval_app.command("beir")
def eval_beir(
    folder: Annotated[Path, typer.Argument(help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/test.tsv")],
    k: Annotated[int, typer.Option("--k", min=1, max=50, help="recall@k and MRR@k cut-off")] = 10,
    as_json: JsonOpt = False,
    home: HomeOpt = None,
) -> None:
    """Retrieval quality as the product retrieves (configured embedder, BM25, fusion): nDCG@10, recall@k,
    MRR@k. The corpus is ingested into a temporary workspace; yours is left alone."""
    from rag.evaluation.beir import evaluate_product, format_product

    settings = settings_from(home=home)
    _run_eval(lambda: evaluate_product(folder, settings, k), format_product, as_json)
