"""BEIR loading and metrics (values worked out by hand), the SQuAD → BEIR builder, the harness."""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import numpy as np
import pytest

from rag.evaluation.beir import (
    BeirDataset,
    build_beir_from_squad,
    evaluate_run,
    evaluate_search,
    load_beir,
    mrr_at_k,
    ndcg_at_k,
    recall_at_k,
)
from rag.evaluation.modes import FusionParams, InMemoryRetriever, compare_modes, split_queries

QRELS = {
    "q1": {"d1": 1, "d3": 2},
    "q2": {"d2": 1},
    "q3": {"d9": 0},  # judged but nothing relevant: not counted
}
RUN = {"q1": ["d3", "d2", "d1"], "q2": ["d5", "d4", "d2"], "q3": ["d9"]}


def test_metrics_by_hand() -> None:
    # q1: DCG = 2/log2(2) + 0 + 1/log2(4) = 2.5; ideal = 2/log2(2) + 1/log2(3)
    assert ndcg_at_k(RUN["q1"], QRELS["q1"]) == pytest.approx(2.5 / (2 + 1 / math.log2(3)))
    assert ndcg_at_k(RUN["q2"], QRELS["q2"]) == pytest.approx(0.5)  # 1/log2(4) over 1
    assert ndcg_at_k(RUN["q1"], QRELS["q1"], k=1) == pytest.approx(1.0)
    assert recall_at_k(RUN["q1"], QRELS["q1"], 2) == 0.5
    assert recall_at_k(RUN["q1"], QRELS["q1"], 3) == 1.0
    assert mrr_at_k(RUN["q2"], QRELS["q2"], 2) == 0.0
    assert mrr_at_k(RUN["q2"], QRELS["q2"], 3) == pytest.approx(1 / 3)
    assert ndcg_at_k([], QRELS["q2"]) == 0.0


def test_evaluate_run_averages_judged_queries() -> None:
    m = evaluate_run(QRELS, RUN, k=3)
    assert m["n_queries"] == 2
    assert m["ndcg@10"] == pytest.approx((2.5 / (2 + 1 / math.log2(3)) + 0.5) / 2)
    assert m["recall@3"] == 1.0
    assert m["mrr@3"] == pytest.approx((1 + 1 / 3) / 2)
    m2 = evaluate_run(QRELS, {"q1": RUN["q1"]}, k=3)  # a query the run lacks scores 0
    assert m2["n_queries"] == 2 and m2["recall@3"] == 0.5


def test_identical_ids_are_ignored_like_beir() -> None:
    qrels = {"x": {"y": 1}}
    assert evaluate_run(qrels, {"x": ["x", "y"]}, k=1)["mrr@1"] == 1.0
    assert evaluate_run(qrels, {"x": ["x", "y"]}, k=1, ignore_identical_ids=False)["mrr@1"] == 0.0


def _write_beir(root: Path) -> None:
    (root / "qrels").mkdir(parents=True)
    docs = [("d1", "Lighthouses", "The Bell Rock light was lit in 1811."), ("d2", "", "Fog horns grunt.")]
    (root / "corpus.jsonl").write_text(
        "\n".join(json.dumps({"_id": i, "title": t, "text": x}) for i, t, x in docs) + "\n"
    )
    queries = [("q1", "When was Bell Rock lit?"), ("q2", "What do fog horns do?"), ("q3", "unjudged")]
    (root / "queries.jsonl").write_text("\n".join(json.dumps({"_id": i, "text": t}) for i, t in queries))
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\nq2\td1\t0\n")


def test_load_beir_and_evaluate_search(tmp_path: Path) -> None:
    _write_beir(tmp_path)
    ds = load_beir(tmp_path)
    assert ds.corpus["d1"] == {"title": "Lighthouses", "text": "The Bell Rock light was lit in 1811."}
    assert ds.qrels == {"q1": {"d1": 1}, "q2": {"d2": 1, "d1": 0}}
    assert ds.eval_query_ids() == ["q1", "q2"]
    asked: list[str] = []

    def search(text: str) -> list[str]:
        asked.append(text)
        return ["d1", "d2"]

    m = evaluate_search(ds, search, k=1)
    assert asked == ["When was Bell Rock lit?", "What do fog horns do?"]
    assert m["n_queries"] == 2 and m["recall@1"] == 0.5 and m["mrr@1"] == 0.5


def test_load_beir_reports_bad_lines(tmp_path: Path) -> None:
    _write_beir(tmp_path)
    (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": "ok"}\nnot json\n')
    with pytest.raises(ValueError, match=r"queries.jsonl:2: Invalid JSON"):
        load_beir(tmp_path)
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1", "text": "ok"}\n\n{"id": "d2", "text": ["x"]}\n')
    bad_line = r"corpus.jsonl:3: missing field '_id'; field 'text': Input should be"
    with pytest.raises(ValueError, match=bad_line):
        load_beir(tmp_path)


def _squad_lines() -> list[dict[str, object]]:
    def row(qid: str, title: str, p: int, ctx: str, q: str, answers: list[str]) -> dict[str, object]:
        return {"id": qid, "title": title, "paragraph_index": p, "context": ctx, "question": q,
                "answers": {"text": answers, "answer_start": [0] * len(answers)},
                "is_impossible": not answers}  # fmt: skip

    return [
        row("a", "Bell_Rock", 0, "The Bell Rock light was lit in 1811.", "When was it lit?", ["1811"]),
        row("b", "Bell_Rock", 0, "The Bell Rock light was lit in 1811.", "Who ate it?", []),
        row("c", "Bell_Rock", 1, "Robert Stevenson built it.", "Who built it?", ["Robert Stevenson"]),
        row("d", "Fog", 0, "Diaphones grunt.", "What grunts?", ["Diaphones"]),
        row("e", "Fog", 1, "Sirens wail.", "Why do sirens wail?", []),
    ]


def test_build_beir_from_squad(tmp_path: Path) -> None:
    src = tmp_path / "flat.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in _squad_lines()) + "\n")
    counts = build_beir_from_squad(src, tmp_path / "beir")
    assert counts == {"documents": 4, "queries": 3}  # every paragraph; answerable questions only
    ds = load_beir(tmp_path / "beir")
    assert ds.corpus["Bell_Rock_0"] == {"title": "Bell Rock", "text": "The Bell Rock light was lit in 1811."}
    assert "Fog_1" in ds.corpus  # a paragraph with only unanswerable questions stays as a distractor
    assert ds.queries == {"a": "When was it lit?", "c": "Who built it?", "d": "What grunts?"}
    assert ds.qrels == {"a": {"Bell_Rock_0": 1}, "c": {"Bell_Rock_1": 1}, "d": {"Fog_0": 1}}
    header = (tmp_path / "beir" / "qrels" / "test.tsv").read_text().splitlines()[0]
    assert header == "query-id\tcorpus-id\tscore"

    few = build_beir_from_squad(src, tmp_path / "few", max_queries=2, seed=1)
    assert few == {"documents": 4, "queries": 2}
    assert build_beir_from_squad(src, tmp_path / "few2", max_queries=2, seed=1) == few
    assert load_beir(tmp_path / "few").queries == load_beir(tmp_path / "few2").queries


def test_split_queries_is_a_seeded_partition() -> None:
    ids = [f"q{i}" for i in range(11)]
    a, b = split_queries(ids, seed=3)
    assert sorted(a + b) == sorted(ids) and len(a) == 5 and not set(a) & set(b)
    assert split_queries(ids, seed=3) == (a, b)


def _hash_encoder(texts: list[str]) -> np.ndarray:
    """A stand-in for MiniLM: hashed bag of lowercase words, normalised."""
    out = np.zeros((len(texts), 1024), dtype=np.float32)
    for i, t in enumerate(texts):
        for w in t.lower().split():
            out[i, zlib.crc32(w.strip("?.,").encode()) % 1024] += 1.0
    out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)
    return out


def test_harness_modes_and_comparison() -> None:
    corpus = {f"d{i}": {"title": f"topic {i}", "text": f"word{i} shared filler text {i}"} for i in range(30)}
    queries = {f"q{i}": f"word{i} shared" for i in range(30)}
    ds = BeirDataset(corpus=corpus, queries=queries, qrels={f"q{i}": {f"d{i}": 1} for i in range(30)})
    retriever = InMemoryRetriever.build(ds, _hash_encoder)
    for mode in ("dense", "lexical", "hybrid"):
        assert retriever.search("word7 shared", mode, k=5)[0] == "d7"
    fused = retriever.search("word7 shared", "hybrid", k=5, fusion=FusionParams("rrf", 0.5, depth=10))
    assert fused[0] == "d7" and len(fused) == 5
    with pytest.raises(ValueError):
        retriever.search("x", "sparse")
    grid = [FusionParams("convex", 0.5, 20), FusionParams("rrf", 0.5, 20)]
    res = compare_modes(ds, retriever, k=10, grid=grid)
    assert set(res["held_out_half"]) == {
        "hybrid_rrf_tuned",
        "dense",
        "lexical",
        "hybrid_rrf_c60",
        "hybrid_default",
        "hybrid_tuned",
    }
    assert res["all"]["lexical"]["ndcg@10"] == pytest.approx(1.0)
    assert res["held_out_half"]["dense"]["n_queries"] == 15


def test_harness_cache_serves_deeper_requests_after_shallow_ones() -> None:
    corpus = {f"d{i}": {"title": "", "text": f"common term{i}"} for i in range(150)}
    ds = BeirDataset(corpus=corpus, queries={}, qrels={})
    retriever = InMemoryRetriever.build(ds, None)
    assert len(retriever.ranking("lexical", "common", 10)) == 10
    assert len(retriever.ranking("lexical", "common", 50)) == 50  # not the 10 cached first
    assert len(retriever.ranking("lexical", "common", 120)) == 120
    assert len(retriever.ranking("lexical", "term3 common", 200)) == 150  # every doc matches, no more


def _write_lighthouse_beir(root: Path) -> None:
    """Eight documents, each the only one about its subject, and a query for four of them."""
    subjects = {
        "bell": ("Bell Rock", "The Bell Rock lighthouse stands on a reef off Arbroath and was lit in 1811."),
        "eddy": ("Eddystone", "Smeaton's Eddystone tower was built of dovetailed granite blocks."),
        "pharos": ("Pharos", "The Pharos of Alexandria was one of the seven wonders of the ancient world."),
        "fresnel": (
            "Fresnel lens",
            "Augustin Fresnel's stepped lens focused a lamp into a far-reaching beam.",
        ),
        "fog": ("Fog signals", "Diaphones, sirens and bells warned ships when fog hid the light."),
        "keepers": ("Keepers", "Keepers trimmed wicks, polished brass and logged the weather every night."),
        "hook": ("Hook Head", "Hook Head in Wexford has guided ships for eight hundred years."),
        "cordouan": ("Cordouan", "Cordouan, at the mouth of the Gironde, is called the king of lighthouses."),
    }
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n" for i, (t, x) in subjects.items())
    )
    queries = {
        "q-bell": "Which lighthouse off Arbroath was lit in 1811?",
        "q-eddy": "Whose tower used dovetailed granite blocks?",
        "q-fresnel": "Who made the stepped lens that focused the lamp's beam?",
        "q-cordouan": "Which lighthouse is called the king of lighthouses?",
    }
    (root / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in queries.items())
    )
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{q[2:]}\t1\n" for q in queries)
    )


@pytest.mark.slow
def test_rag_eval_beir_scores_the_product_retrieval(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from rag.cli.main import app
    from rag.config import Settings
    from rag.evaluation.beir import evaluate_product
    from tests.conftest import MODELS_CACHE

    folder = tmp_path / "beir"
    _write_lighthouse_beir(folder)
    home = tmp_path / "home"
    env = {"RAG_MODELS_CACHE": str(MODELS_CACHE)}
    runner = CliRunner()

    result = runner.invoke(
        app, ["eval", "beir", str(folder), "--k", "1", "--json", "--home", str(home)], env=env
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert set(metrics) == {"ndcg@10", "recall@1", "mrr@1", "n_queries"}
    assert metrics["n_queries"] == 4
    assert metrics["recall@1"] == metrics["mrr@1"] == 1.0  # each query names its one document
    assert metrics["ndcg@10"] == pytest.approx(1.0)
    assert not (home / "rag.db").exists()  # the corpus went into a throwaway workspace

    result = runner.invoke(app, ["eval", "beir", str(folder), "--home", str(home)], env=env)
    assert result.exit_code == 0, result.output
    assert "4 queries over 8 documents" in result.stdout and "hybrid retrieval" in result.stdout
    for row in ("| nDCG@10 | 1.0000 |", "| recall@10 | 1.0000 |", "| MRR@10 | 1.0000 |"):
        assert row in result.stdout

    seen: list[tuple[str, int, int]] = []
    evaluate_product(folder, Settings(home=home, models_cache=MODELS_CACHE), 10, lambda *a: seen.append(a))
    assert ("encoding corpus", 8, 8) in seen and ("queries", 4, 4) in seen


def test_rag_eval_beir_on_a_broken_folder_says_what_is_wrong(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from rag.cli.main import app

    _write_beir(tmp_path)
    (tmp_path / "qrels" / "test.tsv").unlink()
    result = CliRunner().invoke(app, ["eval", "beir", str(tmp_path), "--home", str(tmp_path / "home")])
    assert result.exit_code == 2 and "test.tsv" in result.output
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t0\n")
    result = CliRunner().invoke(app, ["eval", "beir", str(tmp_path), "--home", str(tmp_path / "home")])
    assert result.exit_code == 2 and "no query" in result.output
