"""Ingest throughput against the embedder alone, and an unchanged re-ingest against a full one.

Corpus: the SQuAD-v2 dev paragraphs from ``../shared/data`` written out as Markdown files, one per
article (so the timing includes scanning, loading, chunking, SQL and FAISS), or ``data/`` repeated
when the shared data is absent. Targets (DESIGN.md): ingest ≥ 0.90 of raw encode chunks/s;
unchanged re-ingest ≤ 0.05 of the full ingest's wall time.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from sentence_transformers import SentenceTransformer
from sqlalchemy import select

from bench.common import REPO, SHARED_DATA, report, timer
from rag.config import Settings
from rag.core import Rag
from rag.models import Chunk
from rag.resources import resolve_model_path


def build_corpus(folder: Path) -> str:
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
    for title, paras in paragraphs.items():
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
        with rag.workspace.sessions() as s:
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


if __name__ == "__main__":
    run()
