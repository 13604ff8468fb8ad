"""`rag eval`: metric functions on hand-computable cases, the detector data builders on made-up files,
training on synthetic features, the shipped detector file, and `rag eval detect` end to end with the
real packaged generator. Nothing here reads ../shared (a fresh clone has none)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from typer.testing import CliRunner

from rag.evaluation.detect_data import (
    DetectExample,
    halueval_sets,
    read_examples,
    split_of,
    squad_continue,
    squad_swap,
    words,
    write_examples,
)
from rag.evaluation.metrics import (
    abstain_level,
    auroc,
    contains_answer,
    f1_at,
    max_f1,
    normalize_answer,
    share,
    threshold_for_precision,
    token_f1,
)
from rag.evaluation.own_answers import own_label
from rag.evaluation.questions import question_row, squad_rows
from rag.evaluation.squad import write_paragraphs
from rag.text import strip_citations
from tests.conftest import MODELS_CACHE

if TYPE_CHECKING:
    from rag.generate.generator import Generator

# --------------------------------------------------------------------------------------------------
# metrics


def test_auroc_counts_pairs_and_halves_ties() -> None:
    # positives 0.35 and 0.8 against negatives 0.1 and 0.4: 3 of 4 pairs ordered right
    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert auroc([1, 2, 3, 4], [0, 0, 1, 1]) == 1.0
    assert auroc([4, 3, 2, 1], [0, 0, 1, 1]) == 0.0
    assert auroc([0.5, 0.5], [0, 1]) == 0.5  # a tie counts half
    assert auroc([0.2, 0.5, 0.5, 0.9], [0, 0, 1, 1]) == pytest.approx(0.875)  # (1 + 0.5 + 1 + 1) / 4
    assert math.isnan(auroc([0.1, 0.2], [1, 1]))


def test_auroc_agrees_with_sklearn() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    s = rng.integers(0, 5, 200).astype(float)  # many ties
    y = rng.integers(0, 2, 200)
    assert auroc(s, y) == pytest.approx(roc_auc_score(y, s))


def test_f1_at_threshold() -> None:
    # predicted positive: 0.6, 0.9 (>= 0.5); true positives: the 0.9 one -> P = 1/2, R = 1/2
    assert f1_at([0.1, 0.6, 0.9, 0.3], [0, 0, 1, 1], 0.5) == pytest.approx(0.5)
    assert f1_at([0.1, 0.2], [0, 0], 0.5) == 0.0


def test_squad_normalisation_and_token_f1() -> None:
    assert normalize_answer("The  Normans, in France!") == "normans in france"
    assert token_f1("The Normans", "Normans") == 1.0
    # pred {cat, sat} vs gold {cat, sat, on, mat}: P = 1, R = 1/2, F1 = 2/3
    assert token_f1("the cat sat", "cat sat on a mat") == pytest.approx(2 / 3)
    assert token_f1("dog", "cat") == 0.0
    assert max_f1("in 1066", ["1066", "the year 1066"]) == pytest.approx(2 / 3)
    assert max_f1("anything", []) == 0.0
    assert contains_answer("They settled in France [1].", ["france"])
    assert not contains_answer("They settled in Frankfurt.", ["Frank"])  # whole words only
    assert strip_citations("Paris [1] is big [2, 3].") == "Paris is big ."


@pytest.mark.parametrize(
    ("answerable", "answer", "golds", "declined", "label"),
    [
        (True, "Normandy is located in France [1].", ["France"], False, 0),  # gold contained
        (True, "The Normans came from Denmark.", ["France", "Normandy"], False, 1),  # no word shared
        (True, "In northern France, near Paris.", ["the north of France"], False, None),  # partial
        (True, "I don't know.", ["France"], True, None),  # a decline makes no claim
        (False, "The proclamation was issued in 1598.", [], False, 1),  # a claim where none is due
        (False, "I don't know.", [], True, None),
        (True, "It was issued in 1629 [2].", ["1629"], False, 0),  # citations do not count
        (True, "It was issued in 1598.", ["1629"], False, 1),  # the wrong year: nothing in common
    ],
)
def test_own_answer_labels(answerable: bool, answer: str, golds: list[str], declined: bool,
                           label: int | None) -> None:
    assert own_label(answerable, answer, golds, declined) == label


def test_calibration_targets() -> None:
    # flags at >= 0.2 are right 2 of 4 times, at >= 0.6 2 of 3, at >= 0.7 2 of 2
    risk, bad = [0.1, 0.6, 0.7, 0.9, 0.2], [0, 0, 1, 1, 0]
    assert threshold_for_precision(risk, bad, 0.7) == 0.7
    assert threshold_for_precision(risk, bad, 0.6) == 0.6
    assert threshold_for_precision(risk, bad, 0.5) == 0.2
    # 10 answerable questions, 1 declined already: at most 2 abstentions, so 1 draft may be held back
    drafts = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    level = abstain_level(drafts, n_answerable=10, already=1, max_false=0.2)
    assert sum(r >= level for r in drafts) == 1
    assert abstain_level(drafts, n_answerable=10, already=2, max_false=0.2) > 1  # budget spent
    value, (lo, hi) = share(7, 10)
    assert value == 0.7 and lo < 0.7 < hi and lo >= 0 and hi <= 1


# --------------------------------------------------------------------------------------------------
# data builders


def _halueval_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "halueval_qa"
    folder.mkdir()
    items = [
        (
            "Paris is the capital of France.",
            "What is the capital of France?",
            "Paris",
            "Lyon is the capital of France.",
        ),
        ("The Nile flows through Egypt.", "Which river flows through Egypt?", "The Nile", "The Amazon."),
        (
            "Ada Lovelace wrote the first program.",
            "Who wrote the first program?",
            "Ada Lovelace",
            "It was Charles Babbage who wrote it in 1843.",
        ),
        (
            "Mount Everest is 8,849 metres high.",
            "How high is Everest?",
            "8,849 metres",
            "Everest is 9,100 metres high.",
        ),
        ("Tokyo hosted the 1964 Olympics.", "Which city hosted the 1964 Olympics?", "Tokyo", "Osaka"),
        ("Is water wet? Yes.", "Is water wet?", "yes", "No, water is dry."),
    ]
    for name in ("qa_one-turn_data.json", "qa_multi-turn_data.json"):
        lines = [
            json.dumps({"knowledge": k, "question": q, "right_answer": r, "hallucinated_answer": h})
            for k, q, r, h in items
        ]
        (folder / name).write_text("\n".join(lines) + "\n")
    return folder


def test_halueval_sets(tmp_path: Path) -> None:
    sets = halueval_sets(_halueval_folder(tmp_path))
    raw, matched, swap = sets["halueval"], sets["halueval-matched"], sets["halueval-swap"]
    assert len(raw) == 12  # per question: the right answer + the (identical) hallucinated one, once
    assert sum(e.hallucinated for e in raw) == 6
    # length-matched: as many faithful as hallucinated answers of every word count
    for n in {words(e.response) for e in matched}:
        same = [e for e in matched if words(e.response) == n]
        assert sum(e.hallucinated for e in same) * 2 == len(same)
    assert matched and auroc([words(e.response) for e in matched], [e.hallucinated for e in matched]) == 0.5
    # swap: same template, the distractor is not in the knowledge; yes/no questions left out
    assert swap and all(e.response.startswith("The answer is ") for e in swap)
    assert not any(e.question == "Is water wet?" for e in swap)
    swapped = [e for e in swap if e.hallucinated]
    assert swapped, "the swap set holds hallucinated answers to check"
    for e in swapped:
        assert e.response.removeprefix("The answer is ").rstrip(".").lower() not in e.context.lower()
    # every line of a question is in the same split, in every set
    for e in raw + matched + swap:
        assert e.split == split_of(e.group) and e.split in ("train", "val", "test")


def _toy_squad(tmp_path: Path) -> Path:
    """A SQuAD-2 flat file: five answerable questions about five articles and one unanswerable."""
    rows = []
    for i, (title, context, question, answer) in enumerate(
        [
            ("A", "The castle was built in 1066 by William.", "When was the castle built?", "1066"),
            ("B", "The bridge opened in 1932 after long delays.", "When did the bridge open?", "1932"),
            ("C", "The tower was finished in 1889 for the fair.", "When was the tower finished?", "1889"),
            ("D", "Marie Curie discovered polonium.", "Who discovered polonium?", "Marie Curie"),
            ("E", "Alan Turing broke the code.", "Who broke the code?", "Alan Turing"),
        ]
    ):
        rows.append(
            {
                "id": str(i),
                "title": title,
                "paragraph_index": 0,
                "context": context,
                "question": question,
                "answers": {"text": [answer], "answer_start": [0]},
                "is_impossible": False,
            }
        )
    rows.append(
        {
            "id": "x",
            "title": "F",
            "paragraph_index": 0,
            "context": "Nothing here.",
            "question": "Who?",
            "answers": {"text": [], "answer_start": []},
            "is_impossible": True,
        }
    )
    flat = tmp_path / "dev_flat.jsonl"
    flat.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return flat


def test_squad_swap_and_jsonl_round_trip(tmp_path: Path) -> None:
    flat = _toy_squad(tmp_path)
    examples = squad_swap(flat, n=10)
    assert len(examples) == 10  # five answerable questions, a faithful and an unsupported answer each
    by_question: dict[str, list[DetectExample]] = {}
    for e in examples:
        by_question.setdefault(e.question, []).append(e)
    for pair in by_question.values():
        faithful = next(e for e in pair if not e.hallucinated)
        made_up = next(e for e in pair if e.hallucinated)
        assert words(faithful.response) == words(made_up.response)  # same kind, same template
        assert made_up.response.rstrip(".").split()[-1] not in made_up.context
    path = tmp_path / "set.jsonl"
    assert write_examples(path, examples) == 10
    assert read_examples(path) == examples
    test_only = read_examples(path, split="test")
    assert all(e.split == "test" for e in test_only)


def test_a_users_question_file_reads_as_squad_rows(tmp_path: Path) -> None:
    """`rag eval squad` takes any JSONL of {question, context | contexts, answers}: answers as strings
    (none: unanswerable), the passage's digest as its title so its questions share a split, the
    answer's offset found in the context."""
    passage = "The Bell Rock lighthouse was first lit in 1811. Robert Stevenson built it."
    lines = [
        {"question": "When was it first lit?", "context": passage, "answers": ["1811"]},
        {"question": "Who painted it?", "context": passage, "answers": []},
        {"question": "Who built it?", "contexts": [passage[:47], passage[48:]],
         "answers": "Robert Stevenson"},
    ]
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    first, second, third = squad_rows(path)
    assert first["answers"] == {"text": ["1811"], "answer_start": [passage.index("1811")]}
    assert not first["is_impossible"] and second["is_impossible"]
    assert first["title"] == second["title"] != third["title"] and first["id"] == "mine.jsonl:1"
    assert third["context"] == passage[:47] + "\n\n" + passage[48:]
    assert third["context"][third["answers"]["answer_start"][0]:].startswith("Robert Stevenson")
    write_paragraphs([first, second, third], tmp_path)  # two questions, one passage: one file
    assert sorted(p.read_text(encoding="utf-8") for p in tmp_path.glob("*.txt")) == sorted(
        {passage, third["context"]})
    titled = [question_row({"question": "Q?", "context": c, "title": "Lights"}, f"l{i}")
              for i, c in enumerate(["One passage.", "Another passage."])]
    with pytest.raises(ValueError, match="another passage has title 'Lights'"):
        write_paragraphs(titled, tmp_path)
    path.write_text(json.dumps({"question": "Who?", "answers": ["x"]}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"mine.jsonl:1: .*'context'"):
        list(squad_rows(path))


def test_halueval_qa_reads_as_answerable_question_rows(tmp_path: Path) -> None:
    """HaluEval's QA file (.json, one object per line; knowledge and right_answer) is a question file
    as it stands; a broken SQuAD JSON file still fails as JSON."""
    line = {"knowledge": "The Longstone light stands on the Farne Islands.Grace Darling lived there.",
            "question": "Where does the Longstone light stand?", "right_answer": "the Farne Islands",
            "hallucinated_answer": "Holy Island"}
    path = tmp_path / "qa_data.json"
    path.write_text(json.dumps(line) + "\n" + json.dumps({**line, "question": "Who lived there?",
                                                          "right_answer": "Grace Darling"}) + "\n")
    first, second = squad_rows(path)
    assert first["context"] == line["knowledge"] and not first["is_impossible"]
    assert first["answers"] == {"text": ["the Farne Islands"],
                                "answer_start": [line["knowledge"].index("the Farne")]}
    assert second["answers"]["text"] == ["Grace Darling"] and first["title"] == second["title"]
    path.write_text('{"data": [')
    with pytest.raises(json.JSONDecodeError):
        list(squad_rows(path))


def test_read_examples_names_the_line_and_field_that_are_wrong(tmp_path: Path) -> None:
    good = {"question": "q", "context": "c", "response": "r", "hallucinated": "false"}
    path = tmp_path / "set.jsonl"
    path.write_text(json.dumps(good) + "\n\n" + json.dumps({**good, "hallucinated": "maybe"}) + "\n")
    with pytest.raises(ValueError, match=r"set.jsonl:3: field 'hallucinated': Input should be a valid bool"):
        read_examples(path)
    path.write_text(json.dumps(good) + "\n")
    assert read_examples(path)[0].hallucinated is False  # "false" is false, not a non-empty string


def test_squad_continue_pairs_a_supported_and_a_foreign_sentence(tmp_path: Path) -> None:
    examples = squad_continue(_toy_squad(tmp_path), n=10)
    assert len(examples) == 10
    for faithful, made_up in zip(examples[::2], examples[1::2], strict=True):
        assert (faithful.hallucinated, made_up.hallucinated) == (False, True)
        assert faithful.question == made_up.question and faithful.group == made_up.group
        lead = faithful.response[: len(faithful.response) - len(faithful.context)]
        assert faithful.response == lead + faithful.context  # the toy paragraphs are one sentence
        assert made_up.response.startswith(lead)  # the same "The answer is X." lead, or none
        assert made_up.response[len(lead):] not in made_up.context


# --------------------------------------------------------------------------------------------------
# with the real generator


@pytest.mark.slow
def test_teacher_force_many_matches_teacher_force(generator: Generator) -> None:
    from rag.types import Source

    sources = [Source.from_context("Grace Darling rowed out with her father to rescue the survivors.")]
    answers = ["Grace Darling rowed out.", "Napoleon did, in 1802.", ""]
    many = generator.teacher_force_many("Who rowed out?", sources, answers)
    for answer, got in zip(answers, many, strict=True):
        want = generator.teacher_force("Who rowed out?", sources, answer)
        assert got.token_ids == want.token_ids and got.offsets == want.offsets
        assert got.features.shape == want.features.shape
        assert np.allclose(got.features.numpy(), want.features.numpy(), atol=1e-4)
        assert np.allclose(got.logprobs, want.logprobs, atol=1e-4) and len(got.logprobs) == len(got.token_ids)


@pytest.mark.slow
def test_eval_detect_cli_end_to_end(tmp_path: Path) -> None:
    from rag.cli.main import app

    context = "Grace Darling and her father rowed out in 1838 to rescue nine survivors of the Forfarshire."
    question = "Who rowed out to rescue the survivors of the Forfarshire?"
    lines = [
        {
            "question": question,
            "context": context,
            "response": "Grace Darling and her father.",
            "hallucinated": False,
        },
        {
            "question": question,
            "context": context,
            "response": "The crew of HMS Victory.",
            "hallucinated": True,
        },
        {
            "question": "How many survivors were rescued?",
            "context": context,
            "response": "Nine.",
            "hallucinated": False,
        },
        {
            "question": "How many survivors were rescued?",
            "context": context,
            "response": "Forty-two.",
            "hallucinated": True,
        },
    ]
    path = tmp_path / "tiny.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    runner = CliRunner()
    env = {"RAG_MODELS_CACHE": str(MODELS_CACHE)}
    home = str(tmp_path / "home")
    result = runner.invoke(app, ["eval", "detect", str(path), "--home", home], env=env)
    assert result.exit_code == 0, result.output
    fields = ("(all lines)", "detector", "1 - lookback", "length alone", "threshold", "evidence precision")
    for field in fields:
        assert field in result.output
    result = runner.invoke(app, ["eval", "detect", str(path), "--home", home, "--json"], env=env)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)["all"]
    assert report["n"] == 4 and report["n_hallucinated"] == 2
    for key in ("detector", "lookback", "length", "f1"):
        assert 0 <= report[key] <= 1
    evidence = report["evidence_precision"]  # both faithful answers occur in the context
    assert evidence["n"] == 2 and 0 <= evidence["value"] <= 1
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q"}\n')
    result = runner.invoke(app, ["eval", "detect", str(bad), "--home", home], env=env)
    assert result.exit_code == 2 and "missing field" in result.output
