"""BEIR-format retrieval evaluation: load a folder, score rankings (nDCG@10, recall@k, MRR@k).

A BEIR folder is ``corpus.jsonl`` ({_id, title, text}), ``queries.jsonl`` ({_id, text}) and
``qrels/<split>.tsv`` (header ``query-id corpus-id score``). Metrics follow BEIR/pytrec_eval: linear
gain nDCG with log2 discount, only queries that have a relevant document count, and a document whose
id equals the query id is dropped from that query's ranking (BEIR's ``ignore_identical_ids``).

``rag eval beir DIR`` is :func:`evaluate_product`: the corpus is ingested into a throwaway workspace
and every query goes through ``Rag.search``, so the score is what the product retrieves (the
configured embedder, chunking, BM25 and fusion). :func:`build_beir_from_squad` makes a BEIR folder
from SQuAD-v2 (paragraphs → corpus, answerable questions → queries). The in-memory harness that
compares the three retrieval modes on a corpus directly is rag.evaluation.modes.
"""

from __future__ import annotations

import json
import math
import random
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NotRequired

import numpy as np
from pydantic import TypeAdapter
from typing_extensions import TypedDict  # pydantic reads typing's only from Python 3.12

from rag.config import Settings
from rag.inputs import read_jsonl

Qrels = dict[str, dict[str, int]]


@dataclass
class BeirDataset:
    corpus: dict[str, dict[str, str]]  # corpus id -> {"title", "text"}
    queries: dict[str, str]  # query id -> text
    qrels: Qrels  # query id -> {corpus id: graded relevance}

    def eval_query_ids(self) -> list[str]:
        """Queries that have text and at least one relevant document, in qrels order."""
        return [
            q for q, rels in self.qrels.items() if q in self.queries and any(r > 0 for r in rels.values())
        ]


def _read_jsonl(path: Path) -> Iterable[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except ValueError as e:
                    raise ValueError(f"{path}:{n}: not JSON: {e}") from e


class BeirLine(TypedDict):
    """A line of corpus.jsonl ({_id, title, text}) or of queries.jsonl ({_id, text})."""

    _id: str | int
    title: NotRequired[str | None]
    text: NotRequired[str | None]


_LINE: TypeAdapter[BeirLine] = TypeAdapter(BeirLine)


def load_beir(folder: Path | str, split: str = "test") -> BeirDataset:
    """Read a BEIR folder; raises FileNotFoundError, or ValueError naming the file, line and field that
    are wrong."""
    root = Path(folder)
    corpus = {
        str(d["_id"]): {"title": d.get("title") or "", "text": d.get("text") or ""}
        for d in read_jsonl(root / "corpus.jsonl", _LINE)
    }
    queries = {str(d["_id"]): d.get("text") or "" for d in read_jsonl(root / "queries.jsonl", _LINE)}
    qrels: Qrels = {}
    qrels_path = root / "qrels" / f"{split}.tsv"
    with qrels_path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            parts = line.rstrip("\n").split("\t")
            if n == 1 and parts[0] == "query-id":
                continue
            if len(parts) < 3:
                if line.strip():
                    raise ValueError(f"{qrels_path}:{n}: expected query-id, corpus-id, score")
                continue
            qrels.setdefault(parts[0], {})[parts[1]] = int(float(parts[2]))
    return BeirDataset(corpus=corpus, queries=queries, qrels=qrels)


def doc_text(doc: dict[str, str]) -> str:
    """The text a retriever sees for a corpus entry: the title as its first line, as BEIR does."""
    title, text = doc.get("title", ""), doc.get("text", "")
    return f"{title}\n{text}" if title else text


# --------------------------------------------------------------------------------------------------
# metrics


def ndcg_at_k(ranked: Sequence[str], rels: dict[str, int], k: int = 10) -> float:
    """Linear-gain nDCG@k (trec_eval's ``ndcg_cut``): Σ rel_i / log2(i + 1) over the ideal DCG."""
    dcg = sum(rels.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]) if rels.get(d, 0) > 0)
    ideal = sorted((r for r in rels.values() if r > 0), reverse=True)[:k]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at_k(ranked: Sequence[str], rels: dict[str, int], k: int) -> float:
    relevant = {d for d, r in rels.items() if r > 0}
    return len(relevant.intersection(ranked[:k])) / len(relevant) if relevant else 0.0


def mrr_at_k(ranked: Sequence[str], rels: dict[str, int], k: int) -> float:
    for i, d in enumerate(ranked[:k]):
        if rels.get(d, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def per_query_metrics(
    qrels: Qrels, run: dict[str, list[str]], k: int = 10, ignore_identical_ids: bool = True
) -> dict[str, dict[str, float]]:
    """Metrics for each judged query (a query missing from ``run`` scores 0)."""
    out: dict[str, dict[str, float]] = {}
    for qid, rels in qrels.items():
        if not any(r > 0 for r in rels.values()):
            continue
        ranked = [d for d in run.get(qid, []) if not (ignore_identical_ids and d == qid)]
        out[qid] = {
            "ndcg@10": ndcg_at_k(ranked, rels, 10),
            f"recall@{k}": recall_at_k(ranked, rels, k),
            f"mrr@{k}": mrr_at_k(ranked, rels, k),
        }
    return out


def mean_metrics(
    per_query: dict[str, dict[str, float]], query_ids: Iterable[str] | None = None
) -> dict[str, Any]:
    """Average per-query metrics (over ``query_ids`` when given); adds ``n_queries``."""
    ids = list(per_query) if query_ids is None else [q for q in query_ids if q in per_query]
    if not ids:
        return {"n_queries": 0}
    names = list(per_query[ids[0]])
    means: dict[str, Any] = {m: float(np.mean([per_query[q][m] for q in ids])) for m in names}
    means["n_queries"] = len(ids)
    return means


def evaluate_run(
    qrels: Qrels, run: dict[str, list[str]], k: int = 10, ignore_identical_ids: bool = True
) -> dict[str, Any]:
    """Mean nDCG@10, recall@k and MRR@k of a ranking per query id."""
    return mean_metrics(per_query_metrics(qrels, run, k, ignore_identical_ids))


def evaluate_search(
    dataset: BeirDataset,
    search: Callable[[str], list[str]],
    k: int = 10,
    query_ids: Iterable[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Run ``search(query_text) -> [corpus id, best first]`` over the judged queries and score it.
    ``search`` should return at least max(k, 10) ids."""
    ids = list(query_ids) if query_ids is not None else dataset.eval_query_ids()
    run: dict[str, list[str]] = {}
    for n, qid in enumerate(ids, 1):
        run[qid] = search(dataset.queries[qid])
        if progress is not None:
            progress(n, len(ids))
    qrels = {q: dataset.qrels[q] for q in ids if q in dataset.qrels}
    return evaluate_run(qrels, run, k)


@dataclass
class ProductResult:
    """``rag eval beir``: the metrics of the product's retrieval on one BEIR folder."""

    metrics: dict[str, Any]  # ndcg@10, recall@K, mrr@K, n_queries
    k: int
    n_documents: int
    n_chunks: int
    mode: str
    fusion: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.metrics)


ProgressBar = Callable[[str, int, int], None]  # (stage, done, total)


def _tqdm_progress() -> ProgressBar:
    """One tqdm bar per stage on stderr (none when stderr is not a terminal)."""
    from tqdm import tqdm

    bars: dict[str, Any] = {}

    def update(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(desc=stage, total=total, unit="doc" if "corpus" in stage else "query",
                                     file=sys.stderr, dynamic_ncols=True, disable=None)  # fmt: skip
        bar.total = total
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()

    return update


def evaluate_product(
    folder: Path | str, settings: Settings, k: int = 10, progress: ProgressBar | None = None
) -> ProductResult:
    """Score the product's retrieval on a BEIR folder. The corpus is written as one text file per
    document (title as its first line), ingested with ``settings`` into a temporary workspace (the
    user's own is never touched), and each judged query is a ``Rag.search`` in the configured mode.
    A document counts at the rank of its best chunk. ``progress`` gets ("encoding corpus", done,
    total) while ingesting and ("queries", done, total) after; the default draws tqdm bars."""
    import tempfile

    from rag.core import Rag

    dataset = load_beir(folder)
    query_ids = dataset.eval_query_ids()
    if not query_ids:
        raise ValueError(f"{folder}: no query in queries.jsonl has a relevant document in qrels/test.tsv")
    progress = progress or _tqdm_progress()
    doc_ids = list(dataset.corpus)
    want = max(k, 10)
    with tempfile.TemporaryDirectory(prefix="sightline-beir-") as tmp:
        root = Path(tmp)
        corpus_dir = root / "corpus"
        corpus_dir.mkdir()
        for n, cid in enumerate(doc_ids):
            (corpus_dir / f"{n:08d}.txt").write_text(doc_text(dataset.corpus[cid]), encoding="utf-8")
        fields = settings.model_dump()
        fields.update(home=root / "home", database_url=None, models_cache=settings.models_dir)
        rag = Rag(Settings(**fields))
        summary = rag.ingest([corpus_dir], progress=lambda n, total, _: progress("encoding corpus", n, total))

        def search(query: str) -> list[str]:
            depth = 2 * want  # chunks, not documents: a long document can hold several of the top ones
            while True:
                sources = rag.search(query, depth)
                ranked = list(dict.fromkeys(doc_ids[int(Path(x.path).stem)] for x in sources))
                if len(ranked) >= want or len(sources) < depth:
                    return ranked[:want]
                depth *= 2

        metrics = evaluate_search(
            dataset, search, k, query_ids, progress=lambda done, total: progress("queries", done, total)
        )
        rag.workspace.database.close()
    cfg = rag.settings
    return ProductResult(metrics, k, len(doc_ids), summary.chunks, cfg.retrieval_mode, cfg.fusion_method)


def format_product(result: ProductResult) -> str:
    m, k = result.metrics, result.k
    fusion = f" ({result.fusion} fusion)" if result.mode == "hybrid" else ""
    return "\n".join(
        [
            f"{m['n_queries']} queries over {result.n_documents} documents ({result.n_chunks} chunks), "
            f"{result.mode} retrieval{fusion}",
            "| metric | value |",
            "|---|---|",
            f"| nDCG@10 | {m['ndcg@10']:.4f} |",
            f"| recall@{k} | {m[f'recall@{k}']:.4f} |",
            f"| MRR@{k} | {m[f'mrr@{k}']:.4f} |",
        ]
    )


# --------------------------------------------------------------------------------------------------
# SQuAD → BEIR


def build_beir_from_squad(
    squad_flat_jsonl: Path | str, out_dir: Path | str, max_queries: int | None = None, seed: int = 0
) -> dict[str, int]:
    """Write a BEIR folder from SQuAD lines ``{id, title, paragraph_index, context, question,
    answers: {text: [...]}, is_impossible}``: every paragraph is a document (``<title>_<index>``),
    every answerable question a query whose one relevant document is its paragraph. With
    ``max_queries`` a seeded sample of the questions is kept (file order preserved); the corpus stays
    whole, so the other paragraphs are distractors. Returns the counts written."""
    corpus: dict[str, dict[str, str]] = {}
    questions: list[tuple[str, str, str]] = []  # (query id, text, corpus id)
    for row in _read_jsonl(Path(squad_flat_jsonl)):
        title = str(row.get("title", ""))
        cid = f"{title.replace(' ', '_').replace(chr(9), '_')}_{row['paragraph_index']}"
        corpus.setdefault(cid, {"title": title.replace("_", " "), "text": str(row["context"])})
        answers = (row.get("answers") or {}).get("text") or []
        if not row.get("is_impossible", False) and answers:
            questions.append((str(row["id"]), str(row["question"]).strip(), cid))
    if max_queries is not None and max_queries < len(questions):
        keep = set(random.Random(seed).sample(range(len(questions)), max_queries))
        questions = [q for i, q in enumerate(questions) if i in keep]
    out = Path(out_dir)
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    with (out / "corpus.jsonl").open("w", encoding="utf-8") as f:
        for cid, doc in corpus.items():
            f.write(
                json.dumps({"_id": cid, "title": doc["title"], "text": doc["text"]}, ensure_ascii=False)
                + "\n"
            )
    with (out / "queries.jsonl").open("w", encoding="utf-8") as f:
        for qid, text, _ in questions:
            f.write(json.dumps({"_id": qid, "text": text}, ensure_ascii=False) + "\n")
    with (out / "qrels" / "test.tsv").open("w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for qid, _, cid in questions:
            f.write(f"{qid}\t{cid}\t1\n")
    return {"documents": len(corpus), "queries": len(questions)}
