"""Question files read as SQuAD-2 rows ``{id, title, paragraph_index, context, question, answers,
is_impossible}``: SQuAD's official nested JSON, its flat JSONL, a user's lines of ``{question, context |
contexts, answers}``, and HaluEval QA's lines. `rag eval squad`, the detector's SQuAD sets
(rag.evaluation.detect_data) and the parallel-prefill bench read their questions through these."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def squad_rows(path: Path) -> Iterator[dict[str, Any]]:
    """Question rows ({id, title, paragraph_index, context, question, answers, is_impossible}) from the
    official nested JSON format, or from JSONL: SQuAD's flat lines, or any lines of
    ``{question, context | contexts, answers}`` (see `question_row`)."""
    text, data = path.read_text(encoding="utf-8"), None
    try:
        data = None if path.suffix == ".jsonl" else json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg != "Extra data":  # a .json file of one object per line (HaluEval's) reads as JSONL
            raise
    if not isinstance(data, dict) or "data" not in data:
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                yield question_row(json.loads(line), f"{path.name}:{number}")
        return
    for article in data["data"]:
        for p_index, paragraph in enumerate(article["paragraphs"]):
            for qa in paragraph["qas"]:
                answers = qa.get("answers", [])
                yield {
                    "id": qa["id"],
                    "title": article["title"],
                    "paragraph_index": p_index,
                    "context": paragraph["context"],
                    "question": qa["question"],
                    "answers": {
                        "text": [a["text"] for a in answers],
                        "answer_start": [a["answer_start"] for a in answers],
                    },
                    "is_impossible": bool(qa.get("is_impossible", not answers)),
                }


def question_row(line: dict[str, Any], where: str) -> dict[str, Any]:
    """One JSONL line as a SQuAD row. Beyond SQuAD's own fields it takes a user's file: ``contexts``
    (a list, joined into one passage) for ``context``, ``answers`` as a list of strings (or one), no
    answers meaning unanswerable; a missing ``title`` is a digest of the context, so the train/val
    split keeps every question about one passage on one side, and a missing ``answer_start`` is
    where the answer first occurs in the context (-1: nowhere). HaluEval QA's ``knowledge`` and
    ``right_answer`` stand for ``context`` and ``answers``, so its file is a second corpus of
    answerable questions as it stands."""
    question, context = line.get("question"), line.get("context", line.get("knowledge"))
    if context is None and isinstance(line.get("contexts"), list):
        context = "\n\n".join(str(c).strip() for c in line["contexts"])
    if not isinstance(question, str) or not question.strip() or not isinstance(context, str) or \
            not context.strip():
        raise ValueError(f"{where}: a line needs a non-empty 'question' and 'context' (or 'contexts')")
    answers = line.get("answers", line.get("right_answer", []))
    if isinstance(answers, dict):
        texts, starts = list(answers.get("text", [])), list(answers.get("answer_start", []))
    else:
        texts, starts = ([answers] if isinstance(answers, str) else list(answers)), []
    texts = [str(t) for t in texts]
    if len(starts) != len(texts):
        starts = [context.find(t) for t in texts]
    digest = hashlib.blake2b(context.encode("utf-8"), digest_size=6).hexdigest()
    return {
        "id": str(line.get("id", where)),
        "title": str(line.get("title") or f"passage-{digest}"),
        "paragraph_index": int(line.get("paragraph_index", 0)),
        "context": context,
        "question": question,
        "answers": {"text": texts, "answer_start": starts},
        "is_impossible": bool(line.get("is_impossible", not any(t.strip() for t in texts))),
    }
