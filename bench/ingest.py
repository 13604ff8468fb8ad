"""Ingest throughput against the embedder alone, and an unchanged re-ingest against a full one.

Corpus: the SQuAD-v2 dev paragraphs from ``../shared/data`` written out as Markdown files, one per
article (so the timing includes scanning, loading, chunking, SQL and FAISS), or ``data/`` repeated
when the shared data is absent. Targets (docs/design.md, "Benchmark targets"): ingest ≥ 0.90 of raw
encode chunks/s; unchanged re-ingest ≤ 0.05 of the full ingest's wall time.

``python -m bench ingest --ray [--articles N]``: local ingest next to `rag ingest --ray auto` with 1
and 2 Ray workers (one CPU each) on a local Ray instance, in one run, as chunks/s and ratios. Two
rates each: over the whole call (Ray's start and the workers' model loads included) and steady
(first stored document to last), which is what more workers buy on a long run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from sentence_transformers import SentenceTransformer
from sqlalchemy import select

from bench.common import REPO, SHARED_DATA, report, timer
from rag.config import Settings
from rag.core import Rag
from rag.resources import resolve_model_path
from rag.storage.orm import Chunk


def build_corpus(folder: Path, articles: int | None = None, per_paragraph: bool = False) -> str:
    squad = SHARED_DATA / "squad_v2_dev" / "dev_flat.jsonl"
    if not squad.exists():
        for i in range(20):
            shutil.copytree(REPO / "data", folder / f"copy{i}", ignore=shutil.ignore_patterns("*.py"))
        return "data/ x20"
    paragraphs: dict[str, dict[int, str]] = defaultdict(dict)
    with squad.open() as f:
        for line in f:
            row = json.loads(line)
            paragraphs[row["title"]][row["paragraph_index"]] = row["context"]
    if articles is not None:
        paragraphs = dict(list(paragraphs.items())[:articles])
    for title, paras in paragraphs.items():
        if per_paragraph:  # many small files: the Ray bench's rates are per stored file
            for i in sorted(paras):
                heading = f"# {title.replace('_', ' ')} {i}"
                (folder / f"{title}-{i:03d}.md").write_text(f"{heading}\n\n{paras[i]}\n")
            continue
        body = "\n\n".join(paras[i] for i in sorted(paras))
        (folder / f"{title}.md").write_text(f"# {title.replace('_', ' ')}\n\n{body}\n")
    return f"SQuAD-v2 dev: {len(paragraphs)} articles, {sum(map(len, paragraphs.values()))} paragraphs"


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        corpus.mkdir()
        described = build_corpus(corpus)
        rag = Rag(Settings(home=Path(tmp) / "home"))
        rag.workspace.embedder.encode(["warm up"])  # model load is not ingest throughput
        with timer() as full_t:
            full = rag.ingest([corpus])
        with timer() as again_t:
            again = rag.ingest([corpus])
        with rag.workspace.database.sessions() as s:
            texts = list(s.scalars(select(Chunk.text).order_by(Chunk.id)))
        model = SentenceTransformer(resolve_model_path(rag.settings.embedder))
        model.encode(["warm up"])
        with timer() as encode_t:
            model.encode(texts, batch_size=rag.settings.embed_batch_size, normalize_embeddings=True)
    ingest_cps = full.chunks / full_t()
    encode_cps = len(texts) / encode_t()
    data = {
        "corpus": described,
        "documents": full.documents,
        "chunks": full.chunks,
        "ingest_s": full_t(),
        "encode_s": encode_t(),
        "reingest_s": again_t(),
        "ingest_chunks_per_s": ingest_cps,
        "encode_chunks_per_s": encode_cps,
        "ingest_vs_encode": ingest_cps / encode_cps,
        "reingest_vs_full": again_t() / full_t(),
        "reingest_unchanged": again.unchanged,
    }
    report(
        "ingest",
        [
            ("corpus", described, ""),
            ("chunks", full.chunks, ""),
            ("rag ingest chunks/s", ingest_cps, ""),
            ("raw encode chunks/s", encode_cps, ""),
            ("ingest / raw encode", data["ingest_vs_encode"], ">= 0.90"),
            ("full ingest s", full_t(), ""),
            ("unchanged re-ingest s", again_t(), ""),
            ("re-ingest / full", data["reingest_vs_full"], "<= 0.05"),
        ],
        data,
    )
    return data


def _timed_ingest(rag: Rag, corpus: Path, ray_address: str | None) -> dict[str, float]:
    """Wall and steady chunks/s of one ingest. Steady, on Ray: from the first stored document to the
    last (Ray's start and the workers' model loads left out). A local run has no start-up to leave out
    (its model is loaded before the clock starts, and it reports files as it parses them, long before
    they are stored), so its steady rate is its wall rate."""
    stored: list[float] = []

    def progress(done: int, total: int, path: str) -> None:
        if path:
            stored.append(time.perf_counter())

    with timer() as t:
        summary = rag.ingest([corpus], progress=progress, ray_address=ray_address)
    chunks = summary.chunks
    # the local run reports a file as it starts on it, the Ray run as it is stored: both are one
    # file's worth off, so steady counts the chunks after the first file over the time after it
    steady_s = (stored[-1] - stored[0]) if ray_address and len(stored) > 1 else t()
    per_file = chunks / max(1, summary.documents)
    return {
        "chunks": chunks,
        "wall_s": t(),
        "chunks_per_s": chunks / t(),
        "steady_chunks_per_s": (chunks - per_file) / steady_s if steady_s > 0 else float("nan"),
    }


def run_ray(articles: int | None = None) -> dict[str, Any]:
    """Local ingest and Ray ingest with 1 and 2 workers over the same corpus, fresh workspaces each."""
    runs: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        corpus.mkdir()
        described = build_corpus(corpus, articles, per_paragraph=True) + ", a file per paragraph"
        local = Rag(Settings(home=Path(tmp) / "local"))
        local.workspace.embedder.encode(["warm up"])  # model load is not ingest throughput
        runs["local"] = _timed_ingest(local, corpus, None)
        for workers in (1, 2):
            rag = Rag(Settings(home=Path(tmp) / f"ray{workers}", ray_workers=workers, ray_worker_cpus=1))
            _ = rag.workspace.indexes.dim  # the driver's one model load (a fresh index needs the size)
            runs[f"ray{workers}"] = _timed_ingest(rag, corpus, "auto")
    base = runs["local"]
    rows: list[tuple[str, Any, str]] = [("corpus", described, ""), ("chunks", base["chunks"], "")]
    for name, label in (("local", "local ingest"), ("ray1", "Ray, 1 worker"), ("ray2", "Ray, 2 workers")):
        r = runs[name]
        rows.append((f"{label} chunks/s (wall)", r["chunks_per_s"], ""))
        rows.append((f"{label} chunks/s (steady)", r["steady_chunks_per_s"], ""))
    for name, label in (("ray1", "Ray 1 worker"), ("ray2", "Ray 2 workers")):
        rows.append((f"{label} / local (wall)", runs[name]["chunks_per_s"] / base["chunks_per_s"], ""))
        rows.append(
            (f"{label} / local (steady)", runs[name]["steady_chunks_per_s"] / base["steady_chunks_per_s"], "")
        )
    rows.append(("Ray 2 / 1 workers (steady)", runs["ray2"]["steady_chunks_per_s"]
                 / runs["ray1"]["steady_chunks_per_s"], ""))
    data = {"corpus": described, "runs": runs, "ray_worker_cpus": 1}
    report("ingest_ray", rows, data)
    return data


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench ingest", description=__doc__.split("\n\n")[0])
    ap.add_argument("--ray", action="store_true", help="local ingest next to Ray with 1 and 2 workers")
    ap.add_argument("--articles", type=int, default=None, help="only the first N SQuAD articles")
    args = ap.parse_args(argv)
    if args.ray:
        run_ray(args.articles)
    else:
        run()
    return 0


if __name__ == "__main__":
    main()
