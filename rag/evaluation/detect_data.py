"""Data for the hallucination detector: lines ``{question, context, response, hallucinated}``.

Built from the development data in ``../shared/data`` (see docs/design.md "Data for development"):

- ``halueval``: HaluEval QA as it comes. Per question, the right answer (faithful) and the
  hallucinated answers of both variants (one-turn, multi-turn). Right answers are short spans
  ("Delhi"), hallucinated ones are sentences ("Mumbai, the financial capital of India."), so answer
  length alone separates them well: a detector must be judged on the sets below too.
- ``halueval-matched``: length-matched. Both answers as they come, subsampled so that every answer
  length in words has as many faithful as hallucinated lines (at most one hallucinated line per
  question and length): length alone has AUROC 0.5 on it by construction. Small (~220 lines): short
  hallucinated answers ("Mumbai.") are rare. (Matching against templated faithful answers was tried
  and dropped: docs/history.md#detector-evaluation-sets.)
- ``halueval-swap``: same template, only the answer differs: "The answer is X." with X the right
  answer, or the right answer of another question of the same kind (wh-word, digits, word count)
  that the knowledge does not mention. Yes/no questions are left out (a flipped yes is not unsupported
  text, it is a wrong inference the attention cannot show).
- ``squad-swap``: SQuAD-2 answerable questions with their paragraph. Faithful: the gold answer in a
  short template; unsupported: the gold answer of a question of the same kind about another article,
  not found in this paragraph, in the same template.
- ``squad-continue``: answers of the length the generator writes. The same SQuAD questions; the answer
  is a sentence of the paragraph that holds the gold answer (faithful) or the sentence of another
  article closest to it in length (unsupported), half the time after "The answer is X." with the gold
  X. The label is the last sentence's, and the detector is trained on that sentence's features: the
  product scores sentences, and a second sentence has the first to look back on.

Every line carries ``group`` (lines about the same question or paragraph share it) and ``split``
(train/val/test, a hash of the group, so all sets agree and no question is in two splits).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from rag.evaluation.questions import squad_rows
from rag.inputs import read_jsonl

# ../shared/data beside the checkout, as docs/design.md says (RAG_SHARED_DATA overrides)
SHARED_DATA = Path(os.environ.get("RAG_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
HALUEVAL_VARIANTS = ("qa_one-turn_data.json", "qa_multi-turn_data.json")
SQUAD_FLAT = "squad_v2_dev/dev_flat.jsonl"
SENTENCE = "The answer is {}."
SQUAD_TEMPLATES = ("{}.", "The answer is {}.", "It is {}.")


@dataclass
class DetectExample:
    """One line of a `rag eval detect` file."""

    question: str
    context: str
    response: str
    hallucinated: bool
    group: str = ""
    split: str = ""
    source: str = ""


_EXAMPLE: TypeAdapter[DetectExample] = TypeAdapter(DetectExample)


def split_of(group: str, val: float = 0.2, test: float = 0.2) -> str:
    """train / val / test from a stable hash of the group name."""
    u = int(hashlib.sha256(group.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if u < test else "val" if u < test + val else "train"


def read_examples(path: Path | str, split: str | None = None) -> list[DetectExample]:
    """Lines of a JSONL file; only those of `split` when given (lines without one are kept)."""
    examples = read_jsonl(Path(path), _EXAMPLE)
    return [ex for ex in examples if split is None or not ex.split or ex.split == split]


def write_examples(path: Path | str, examples: Iterable[DetectExample]) -> int:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8") as f:
        for ex in examples:
            f.write(json.dumps(asdict(ex), ensure_ascii=False) + "\n")
            n += 1
    return n


def words(text: str) -> int:
    return len(text.split())


# --------------------------------------------------------------------------------------------------
# answer kinds, for distractors that look like the real answer


_WH = (
    ("how-many", r"\bhow (many|much)\b"),
    ("when", r"\bwhen\b|\b(what|which) (year|century|decade|date|month|day|time)\b"),
    ("who", r"\bwho(m|se)?\b"),
    ("where", r"\bwhere\b"),
    ("why", r"\bwhy\b"),
    ("how", r"\bhow\b"),
    ("which", r"\bwhich\b"),
    ("what", r"\bwhat\b"),
)


def wh_kind(question: str) -> str:
    q = question.lower()
    return next((name for name, pattern in _WH if re.search(pattern, q)), "other")


def answer_kind(question: str, answer: str) -> tuple[str, bool, int]:
    """(wh-word, has digits, words) of a question's answer."""
    return wh_kind(question), bool(re.search(r"\d", answer)), words(answer)


def _mentions(context: str, answer: str) -> bool:
    norm = lambda s: " ".join(re.sub(r"[^\w\s]", " ", s.lower()).split())  # noqa: E731
    return f" {norm(answer)} " in f" {norm(context)} "


def pick_distractor(
    rng: random.Random,
    pool: dict[tuple[str, bool, int], list[tuple[str, str]]],
    kind: tuple[str, bool, int],
    context: str,
    avoid_group: str,
    golds: Sequence[str],
) -> str | None:
    """An answer of the same kind (relaxing the word count by one if need be) from another group
    that the context does not mention."""
    wh, digits, n = kind
    gold_norm = {g.strip().lower() for g in golds}
    for candidates in ([(wh, digits, n)], [(wh, digits, n - 1), (wh, digits, n + 1)]):
        options = [
            text
            for key in candidates
            for text, group in pool.get(key, [])
            if group != avoid_group and text.strip().lower() not in gold_norm and not _mentions(context, text)
        ]
        if options:
            return rng.choice(options)
    return None


# --------------------------------------------------------------------------------------------------
# HaluEval QA


def _read_json_lines(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8").strip()
    if text.startswith("["):
        return list(json.loads(text))
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def halueval_items(folder: Path) -> list[dict[str, Any]]:
    """Per question: knowledge, question, right_answer and the hallucinated answers of both variants."""
    variants = [_read_json_lines(folder / name) for name in HALUEVAL_VARIANTS if (folder / name).exists()]
    if not variants:
        raise FileNotFoundError(f"no HaluEval QA files ({', '.join(HALUEVAL_VARIANTS)}) in {folder}")
    items = []
    for i, rows in enumerate(zip(*variants, strict=True)):
        first = rows[0]
        if any(r["question"] != first["question"] for r in rows):
            raise ValueError(f"HaluEval variants disagree on question {i}")
        hallucinated = list(dict.fromkeys(r["hallucinated_answer"].strip() for r in rows))
        items.append({**first, "index": i, "hallucinated": hallucinated})
    return items


def halueval_sets(folder: Path, seed: int = 0) -> dict[str, list[DetectExample]]:
    """The three HaluEval-based sets described in the module docstring (each set draws from its own
    seeded generator, so changing how one is built leaves the others as they were)."""
    items = halueval_items(folder)
    raw: list[DetectExample] = []
    for it in items:
        group = f"halueval:{it['index']}"
        common = {
            "question": it["question"],
            "context": it["knowledge"],
            "group": group,
            "split": split_of(group),
        }
        raw.append(
            DetectExample(
                response=it["right_answer"].strip(), hallucinated=False, source="halueval", **common
            )
        )
        raw.extend(
            DetectExample(response=h, hallucinated=True, source="halueval", **common)
            for h in it["hallucinated"]
        )

    # length-matched: answers as they come, as many faithful as hallucinated ones per word count
    faithful: dict[int, list[DetectExample]] = defaultdict(list)
    hallucinated: dict[int, list[DetectExample]] = defaultdict(list)
    for ex in raw:
        (hallucinated if ex.hallucinated else faithful)[words(ex.response)].append(ex)
    matched: list[DetectExample] = []
    rng = random.Random(f"{seed}:halueval-matched")
    for n in sorted(set(faithful) & set(hallucinated)):
        pos = list({e.group: e for e in rng.sample(hallucinated[n], len(hallucinated[n]))}.values())
        neg = faithful[n]  # one per question already
        take = min(len(pos), len(neg))
        for e in rng.sample(pos, take) + rng.sample(neg, take):
            matched.append(DetectExample(**{**asdict(e), "source": "halueval-matched"}))

    # swap: the same template, another question's answer of the same kind
    pool: dict[tuple[str, bool, int], list[tuple[str, str]]] = defaultdict(list)
    for it in items:
        pool[answer_kind(it["question"], it["right_answer"])].append(
            (it["right_answer"].strip(), f"halueval:{it['index']}")
        )
    swap: list[DetectExample] = []
    rng = random.Random(f"{seed}:halueval-swap")
    for it in items:
        right = it["right_answer"].strip()
        if right.lower().rstrip(".") in {"yes", "no"}:
            continue
        group = f"halueval:{it['index']}"
        other = pick_distractor(
            rng, pool, answer_kind(it["question"], right), it["knowledge"], group, [right]
        )
        if other is None:
            continue
        for answer, label in ((right, False), (other, True)):
            swap.append(
                DetectExample(
                    it["question"],
                    it["knowledge"],
                    SENTENCE.format(answer.rstrip(".")),
                    label,
                    group,
                    split_of(group),
                    "halueval-swap",
                )
            )
    return {"halueval": raw, "halueval-matched": matched, "halueval-swap": swap}


# --------------------------------------------------------------------------------------------------
# SQuAD-2


def squad_swap(path: Path, n: int = 600, seed: int = 0) -> list[DetectExample]:
    """`n` answerable questions, each with a faithful and an unsupported answer in the same template."""
    rng = random.Random(seed)
    rows = [r for r in squad_rows(path) if not r["is_impossible"] and r["answers"]["text"]]
    pool: dict[tuple[str, bool, int], list[tuple[str, str]]] = defaultdict(list)
    for r in rows:
        gold = r["answers"]["text"][0].strip()
        pool[answer_kind(r["question"], gold)].append((gold, r["title"]))
    out: list[DetectExample] = []
    for r in rng.sample(rows, min(n, len(rows))):
        gold = r["answers"]["text"][0].strip()
        other = pick_distractor(
            rng, pool, answer_kind(r["question"], gold), r["context"], r["title"], r["answers"]["text"]
        )
        if other is None:
            continue
        template = rng.choice(SQUAD_TEMPLATES)
        group = f"squad:{r['title']}:{r['paragraph_index']}"
        for answer, label in ((gold, False), (other, True)):
            out.append(
                DetectExample(
                    r["question"],
                    r["context"],
                    template.format(answer.rstrip(".")),
                    label,
                    group,
                    split_of(group),
                    "squad-swap",
                )
            )
    return out


def squad_continue(path: Path, n: int = 600, seed: int = 0) -> list[DetectExample]:
    """`n` answerable questions, each with a supported and an unsupported sentence-long answer."""
    from rag.text import split_sentences

    rng = random.Random(seed + 1)
    rows = [r for r in squad_rows(path) if not r["is_impossible"] and r["answers"]["text"]]
    sentences: dict[str, list[str]] = defaultdict(list)  # title -> sentences of its paragraphs
    for r in {(r["title"], r["context"]): r for r in rows}.values():
        sentences[r["title"]] += [r["context"][a:b] for a, b in split_sentences(r["context"])]
    titles = sorted(sentences)
    out: list[DetectExample] = []
    for r in rng.sample(rows, min(n, len(rows))):
        gold, context = r["answers"]["text"][0].strip(), r["context"]
        spans = split_sentences(context)
        start = r["answers"]["answer_start"][0]
        holding = [context[a:b] for a, b in spans if a <= start < b]
        if not holding or len(titles) < 2:
            continue
        faithful = holding[0]
        other = rng.choice([t for t in titles if t != r["title"]])
        foreign = [x for x in sentences[other] if not _mentions(context, x)]
        if not foreign:
            continue
        unsupported = min(foreign, key=lambda x: abs(words(x) - words(faithful)))
        lead = SENTENCE.format(gold.rstrip(".")) + " " if rng.random() < 0.5 else ""
        group = f"squad:{r['title']}:{r['paragraph_index']}"
        for sentence, label in ((faithful, False), (unsupported, True)):
            out.append(
                DetectExample(r["question"], context, lead + sentence, label, group, split_of(group),
                              "squad-continue")
            )
    return out


def build_all(data_dir: Path, squad_n: int = 600, seed: int = 0) -> dict[str, list[DetectExample]]:
    """Every detector set from a `../shared/data`-like folder, by name."""
    sets = halueval_sets(data_dir / "halueval_qa", seed)
    sets["squad-swap"] = squad_swap(data_dir / SQUAD_FLAT, squad_n, seed)
    sets["squad-continue"] = squad_continue(data_dir / SQUAD_FLAT, squad_n, seed)
    return sets


def write_all(data_dir: Path, out_dir: Path, squad_n: int = 600, seed: int = 0) -> dict[str, int]:
    """Write each set as OUT_DIR/NAME.jsonl; returns lines per file."""
    return {
        name: write_examples(out_dir / f"{name}.jsonl", examples)
        for name, examples in build_all(data_dir, squad_n, seed).items()
    }
