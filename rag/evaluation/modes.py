"""Compare the retrieval modes on a BEIR corpus directly, without the ingest path: MiniLM exact inner
product, our BM25, and their fusion (:class:`InMemoryRetriever`), scored with rag.evaluation.beir.

``python -m rag.evaluation.modes [--squad FILE --out DIR] [DIR]`` tunes the fusion settings on one
half of the queries and reports every mode on the other half (how rag/retrieve/fusion.py's defaults were
chosen).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rag.config import Settings
from rag.evaluation.beir import (
    BeirDataset,
    build_beir_from_squad,
    doc_text,
    load_beir,
    mean_metrics,
    per_query_metrics,
)
from rag.index.lexical import LexicalIndex
from rag.retrieve.fusion import DEFAULT_C, DEFAULT_DENSE_WEIGHT, DEFAULT_DEPTH, DEFAULT_METHOD, fuse_hybrid

CACHE_DEPTH = 100  # every query is ranked this deep once, then sliced


def split_queries(query_ids: Sequence[str], seed: int = 0) -> tuple[list[str], list[str]]:
    """A seeded random halving of the queries: tune on the first, report on the second."""
    ids = list(query_ids)
    random.Random(seed).shuffle(ids)
    half = len(ids) // 2
    return sorted(ids[:half]), sorted(ids[half:])





@dataclass(frozen=True)
class FusionParams:
    method: str = DEFAULT_METHOD
    dense_weight: float = DEFAULT_DENSE_WEIGHT
    depth: int = DEFAULT_DEPTH
    c: int = DEFAULT_C  # RRF only


@dataclass
class InMemoryRetriever:
    """Dense (MiniLM, exact inner product on normalised embeddings), BM25 and RRF over one corpus.

    Documents are numbered 0..n-1 in corpus order; rankings are computed once per query to a fixed
    depth so fusion settings can be compared without re-running the retrievers."""

    doc_ids: list[str]
    doc_vectors: np.ndarray | None  # (n, d) float32, normalised; None = lexical only
    lexical: LexicalIndex
    encode: Callable[[list[str]], np.ndarray] | None = None
    _cache: dict[tuple[str, str], list[tuple[int, float]]] = field(default_factory=dict)
    _cache_depth: dict[tuple[str, str], int] = field(default_factory=dict)  # depth asked of the retriever

    @classmethod
    def build(
        cls,
        dataset: BeirDataset,
        encode: Callable[[list[str]], np.ndarray] | None,
    ) -> InMemoryRetriever:
        doc_ids = list(dataset.corpus)
        texts = [doc_text(dataset.corpus[d]) for d in doc_ids]
        vectors = encode(texts) if encode is not None else None
        lexical = LexicalIndex.from_pairs(enumerate(texts))
        return cls(doc_ids=doc_ids, doc_vectors=vectors, lexical=lexical, encode=encode)

    def prime_dense(self, queries: Sequence[str], depth: int = CACHE_DEPTH) -> None:
        """Encode many queries in one batch (much faster than one at a time) and cache their rankings."""
        if self.encode is None or self.doc_vectors is None:
            return
        todo = [q for q in dict.fromkeys(queries) if ("dense", q) not in self._cache]
        if not todo:
            return
        sims = self.encode(todo) @ self.doc_vectors.T
        for q, row in zip(todo, sims, strict=True):
            self._cache[("dense", q)] = self._top(row, depth)
            self._cache_depth[("dense", q)] = depth

    @staticmethod
    def _top(row: np.ndarray, depth: int) -> list[tuple[int, float]]:
        order = np.lexsort((np.arange(len(row)), -row))[:depth]
        return [(int(i), float(row[i])) for i in order]

    def ranking(self, mode: str, query: str, depth: int = CACHE_DEPTH) -> list[tuple[int, float]]:
        """The top-``depth`` (doc number, score) of one retriever; cached CACHE_DEPTH deep (or deeper)."""
        key = (mode, query)
        cached = self._cache.get(key)
        if cached is None or (len(cached) < depth and len(cached) == self._cache_depth.get(key, 0)):
            want = max(depth, CACHE_DEPTH)
            if mode == "lexical":
                cached = self.lexical.search(query, want)
            elif mode == "dense":
                if self.encode is None or self.doc_vectors is None:
                    raise ValueError("no encoder: dense mode unavailable")
                cached = self._top((self.encode([query]) @ self.doc_vectors.T)[0], want)
            else:
                raise ValueError(f"unknown mode {mode!r}")
            self._cache[key] = cached
            self._cache_depth[key] = want
        return cached[:depth]

    def search(
        self, query: str, mode: str = "hybrid", k: int = 10, fusion: FusionParams | None = None
    ) -> list[str]:
        if mode == "hybrid":
            p = fusion or FusionParams()
            fused = fuse_hybrid(
                self.ranking("dense", query, p.depth),
                self.ranking("lexical", query, p.depth),
                k,
                method=p.method,
                dense_weight=p.dense_weight,
                c=p.c,
            )
            return [self.doc_ids[i] for i, _ in fused]
        return [self.doc_ids[i] for i, _ in self.ranking(mode, query, max(k, 10))]


def minilm_encoder(embedder: str | None = None) -> Callable[[list[str]], np.ndarray]:
    """The packaged MiniLM (or ``embedder``), normalised float32 embeddings."""
    from sentence_transformers import SentenceTransformer

    from rag.resources import resolve_model_path

    model = SentenceTransformer(resolve_model_path(embedder or Settings().embedder), device="cpu")

    def encode(texts: list[str]) -> np.ndarray:
        out = model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
        return np.asarray(out, dtype=np.float32)

    return encode


FUSION_GRID: list[FusionParams] = [
    *(
        FusionParams("rrf", dense_weight=w, depth=d, c=c)
        for c in (10, 30, 60, 100)
        for d in (20, 50, 100)
        for w in (0.3, 0.4, 0.5, 0.6, 0.7)
    ),
    *(
        FusionParams("convex", dense_weight=w, depth=d)
        for d in (20, 50, 100)
        for w in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
    ),
]


def compare_modes(
    dataset: BeirDataset,
    retriever: InMemoryRetriever,
    k: int = 10,
    seed: int = 0,
    grid: Sequence[FusionParams] = FUSION_GRID,
) -> dict[str, Any]:
    """Dense, lexical and hybrid on the judged queries. Fusion settings are picked on a tuning half
    (by nDCG@10) and all modes are reported on the held-out half and on all queries, next to the
    untuned default RRF, so a gain that only comes from tuning on the test queries shows up."""
    ids = dataset.eval_query_ids()
    retriever.prime_dense([dataset.queries[q] for q in ids])
    tune, held = split_queries(ids, seed)

    def per_query(mode: str, fusion: FusionParams | None = None) -> dict[str, dict[str, float]]:
        run = {q: retriever.search(dataset.queries[q], mode, max(k, 10), fusion) for q in ids}
        return per_query_metrics({q: dataset.qrels[q] for q in ids}, run, k)

    results: dict[str, Any] = {
        "n_documents": len(dataset.corpus),
        "n_queries": len(ids),
        "k": k,
        "seed": seed,
    }
    pq = {
        "dense": per_query("dense"),
        "lexical": per_query("lexical"),
        "hybrid_rrf_c60": per_query("hybrid", FusionParams("rrf", dense_weight=0.5, c=60)),
        "hybrid_default": per_query("hybrid", FusionParams()),
    }
    scored = [(mean_metrics(per_query("hybrid", p), tune)["ndcg@10"], i, p) for i, p in enumerate(grid)]
    best_ndcg, _, best = max(scored, key=lambda t: (t[0], -t[1]))
    pq["hybrid_tuned"] = per_query("hybrid", best)
    best_rrf = max((t for t in scored if t[2].method == "rrf"), key=lambda t: (t[0], -t[1]), default=None)
    if best_rrf is not None:
        pq["hybrid_rrf_tuned"] = per_query("hybrid", best_rrf[2])
        results["best_rrf_on_tuning_half"] = {**asdict(best_rrf[2]), "ndcg@10": best_rrf[0]}
    results["tuned_on_first_half"] = {**asdict(best), "tune_ndcg@10": best_ndcg}
    results["default_fusion"] = asdict(FusionParams())
    for name, subset in (("held_out_half", held), ("tuning_half", tune), ("all", ids)):
        results[name] = {mode: mean_metrics(values, subset) for mode, values in pq.items()}
    top_grid = sorted(scored, key=lambda t: -t[0])[:5]
    results["grid_top5_on_tuning_half"] = [{**asdict(p), "ndcg@10": s} for s, _, p in top_grid]
    held_gain = {
        m: results["held_out_half"]["hybrid_default"]["ndcg@10"] - results["held_out_half"][m]["ndcg@10"]
        for m in ("dense", "lexical")
    }
    results["held_out_gain_of_default_hybrid"] = {**held_gain, **_bootstrap(pq, held)}
    return results


def _bootstrap(pq: dict[str, dict[str, dict[str, float]]], ids: list[str], n: int = 2000) -> dict[str, Any]:
    """Paired bootstrap 95% interval of the default hybrid's nDCG@10 gain over the best single mode."""
    best = max(("dense", "lexical"), key=lambda m: mean_metrics(pq[m], ids)["ndcg@10"])
    d = np.array([pq["hybrid_default"][q]["ndcg@10"] - pq[best][q]["ndcg@10"] for q in ids])
    rng = np.random.default_rng(0)
    means = d[rng.integers(0, len(d), size=(n, len(d)))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {
        "vs": best,
        "ci95": [float(lo), float(hi)],
        "queries_better": int((d > 0).sum()),
        "queries_worse": int((d < 0).sum()),
    }


def _print_table(results: dict[str, Any], k: int) -> None:
    for part in ("held_out_half", "all"):
        print(f"\n{part} (n={next(iter(results[part].values()))['n_queries']})")
        print(f"| mode | nDCG@10 | recall@{k} | MRR@{k} |\n|---|---|---|---|")
        for mode, m in results[part].items():
            print(f"| {mode} | {m['ndcg@10']:.4f} | {m[f'recall@{k}']:.4f} | {m[f'mrr@{k}']:.4f} |")
    print("\ndefault fusion:", results["default_fusion"])
    print("tuned fusion (on the tuning half):", results["tuned_on_first_half"])
    print("best RRF (on the tuning half):", results.get("best_rrf_on_tuning_half"))
    print("held-out gain of the default hybrid:", results["held_out_gain_of_default_hybrid"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rag.evaluation.modes", description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", nargs="?", help="BEIR folder (built from --squad when given)")
    ap.add_argument("--squad", help="SQuAD dev_flat.jsonl to build the folder from")
    ap.add_argument("--out", help="where to write the built folder (default: FOLDER)")
    ap.add_argument("--max-queries", type=int, default=None)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    folder = Path(args.out or args.folder or "")
    if args.squad:
        if not (args.out or args.folder):
            ap.error("--squad needs --out or FOLDER")
        print("built", build_beir_from_squad(args.squad, folder, args.max_queries, args.seed), "in", folder)
    elif not args.folder:
        ap.error("give a BEIR FOLDER or --squad")
    dataset = load_beir(folder)
    retriever = InMemoryRetriever.build(dataset, minilm_encoder())
    results = compare_modes(dataset, retriever, k=args.k, seed=args.seed)
    _print_table(results, args.k)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
