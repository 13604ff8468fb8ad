"""``Rag``: the few verbs sightline offers (ingest, search, ask, attribute), on one object.
The CLI and the REST service are thin shells over it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rag.config import Settings
from rag.ingestion import Ingestor, IngestSummary, ProgressFn
from rag.inputs import MAX_ANSWER_CHARS, check_text, unclean, valid_id
from rag.retrieve import Filters, Retriever
from rag.store import AnswerSummary, DocumentInfo, answer_summaries, chunk_texts, document_infos, sources_for
from rag.types import Answer, Attribution, BadInput, Source
from rag.workspace import Workspace

if TYPE_CHECKING:
    from rag.answering import AnswerPipeline
    from rag.decoding import Generation


class Rag:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.workspace = Workspace(self.settings)
        self._pipeline: AnswerPipeline | None = None
        self._pipeline_lock = threading.Lock()

    @cached_property
    def retriever(self) -> Retriever:
        return Retriever(self.workspace)

    def ingest(
        self,
        paths: Sequence[Path | str],
        include: list[str] | None = None,
        exclude: list[str] | None = None,
        progress: ProgressFn | None = None,
        ray_address: str | None = None,
    ) -> IngestSummary:
        """Sync ``paths`` into the workspace; with ``ray_address`` ("auto" or a cluster's address) the
        parsing and embedding run on Ray Data (rag.distributed)."""
        ingestor = Ingestor(self.workspace)
        if ray_address:
            from rag.distributed import RayIngestor

            ingestor = RayIngestor(self.workspace, ray_address)
        summary = ingestor.run([Path(p) for p in paths], include, exclude, progress)
        self._forget_gone_chunks()
        return summary

    def search(
        self, query: str, k: int | None = None, filters: Filters | None = None, mode: str | None = None
    ) -> list[Source]:
        """Retrieval only; ``mode`` is dense, lexical or hybrid (default: settings.retrieval_mode)."""
        check_text(query, "the query")
        return self.retriever.run(query, k or self.settings.top_k, filters, mode).sources

    # answering ---------------------------------------------------------------------------------------
    @property
    def generator_loaded(self) -> bool:
        return self._pipeline is not None

    def load_generator(self) -> AnswerPipeline:
        """Load the generator and the detector once (first GGUF use converts it, ~30 s)."""
        with self._pipeline_lock:
            if self._pipeline is None:
                from rag.answering import AnswerPipeline
                from rag.batching import DecodeBatcher
                from rag.detect import Detector
                from rag.generate import Generator

                generator = Generator.load(self.settings)
                detector = Detector.for_generator(generator.name)
                batch = self.settings.batch_max
                batcher = DecodeBatcher(generator, batch) if batch > 1 else None
                self._pipeline = AnswerPipeline(self.workspace, generator, detector, batcher)
            return self._pipeline

    def ask(
        self,
        question: str,
        k: int | None = None,
        filters: Filters | None = None,
        *,
        on_sources: Callable[[list[Source]], None] | None = None,
        on_token: Callable[[str], None] | None = None,
        on_generation: Callable[[Generation], None] | None = None,
        mode: str | None = None,
        guided: bool | None = None,
    ) -> Answer:
        """Answer with citations and attribution; the answer is stored (see ``get_answer``) unless
        the database is read-only (``workspace.stores_answers``). ``guided``: Lookback Lens guided
        decoding (rag.guided); None takes settings.guided."""
        question = check_text(question, "the question").strip()
        self.workspace.check_embedder()  # before the generator loads: retrieval would refuse after it
        pipeline = self.load_generator()
        pipeline.generator.check_lengths(question)
        t0 = time.perf_counter()
        found = self.retriever.run(question, k or self.settings.top_k, filters, mode)
        retrieve_ms = (time.perf_counter() - t0) * 1000
        sources = found.focused(self.settings.context_score_ratio)
        if on_sources:
            on_sources(sources)
        return pipeline.run(question, sources, found.relevance, retrieve_ms, on_token, on_generation, guided)

    def attribute(
        self, question: str, answer: str, context: str | None = None, chunk_ids: list[int] | None = None
    ) -> Attribution:
        """Attribution of an answer written elsewhere, teacher-forced through our decoder in one pass.
        Sources: the given chunks, else the given context text, else what retrieval finds."""
        from rag.attribution import attribute

        question = check_text(question, "the question").strip()
        check_text(answer, "the answer", MAX_ANSWER_CHARS)
        if context is not None and (problem := unclean(context)):
            raise BadInput(f"the context {problem}")
        pipeline = self.load_generator()
        pipeline.generator.check_lengths(question, answer, context)
        if chunk_ids:
            with self.workspace.sessions() as s:
                sources = sources_for(s, [(int(c), 0.0) for c in chunk_ids if valid_id(int(c))])
            missing = sorted({int(c) for c in chunk_ids} - {x.chunk_id for x in sources})
            if missing:
                raise BadInput(f"unknown chunk ids: {missing[:10]}")
        elif context is not None and context.strip():
            sources = [Source.from_context(context)]
        else:
            sources = self.retriever.run(question, self.settings.top_k).sources
            if not sources:
                raise BadInput("no sources: give context or chunk_ids, or ingest documents first")
        generation = pipeline.generator.teacher_force(question, sources, answer)
        return attribute(generation, sources, pipeline.detector)

    def get_answer(self, answer_id: str) -> Answer | None:
        from rag.answering import load_answer

        return load_answer(self.workspace, answer_id)

    def answers(self, limit: int = 20, offset: int = 0) -> tuple[list[AnswerSummary], int]:
        """Stored answers, newest first: one page of them and the total."""
        with self.workspace.sessions() as s:
            return answer_summaries(s, limit, offset)

    def report_html(self, answer_id: str) -> str | None:
        from rag.report import render_html

        answer = self.get_answer(answer_id)
        return render_html(answer) if answer else None

    def documents(self) -> list[DocumentInfo]:
        with self.workspace.sessions() as s:
            return document_infos(s)

    def document(self, document_id: int) -> DocumentInfo | None:
        if not valid_id(document_id):
            return None
        with self.workspace.sessions() as s:
            found = document_infos(s, document_id)
        return found[0] if found else None

    def delete_document(self, document_id: int) -> bool:
        """Remove a document's chunks from SQL and the indexes; the indexes are saved at once."""
        if not valid_id(document_id):
            return False
        with self.workspace.write_lock():
            deleted = self.workspace.delete_document(document_id)
            if deleted:
                self.workspace.save_indexes()
        self._forget_gone_chunks()
        return deleted

    def _forget_gone_chunks(self) -> None:
        """Free the cached KV of chunks no longer in SQL as they were (deleted or re-ingested). Only
        memory is at stake: a cache key holds the chunk's token hash, so nothing stale is ever served."""
        pipeline = self._pipeline
        if pipeline is None:
            return
        cached = pipeline.generator.chunk_kv.chunk_ids()
        if cached:
            with self.workspace.sessions() as s:
                live = dict(chunk_texts(s, np.array(sorted(cached), dtype=np.int64)))
            pipeline.generator.chunk_kv.retain(live)
