"""``Rag``: the few verbs sightline offers (ingest, search, ask, attribute), on one object.
The CLI and the REST service are thin shells over it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rag.config import Settings
from rag.index.embedder_record import check_embedder
from rag.ingest.records import IngestSummary, ProgressFn
from rag.ingest.sync import Ingestor
from rag.inputs import MAX_ANSWER_CHARS, check_mode, check_text, unclean, valid_id
from rag.retrieve.retriever import Filters, Retriever
from rag.storage.queries import (
    AnswerSummary,
    DocumentInfo,
    answer_summaries,
    chunk_texts,
    document_infos,
    sources_for,
)
from rag.types import Answer, Attribution, BadInput, Source
from rag.workspace import Workspace

if TYPE_CHECKING:
    from rag.answer.pipeline import AnswerPipeline
    from rag.generate.decoding import Generation


class Rag:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.workspace = Workspace(self.settings)
        self._pipeline: AnswerPipeline | None = None
        self._pipeline_lock = threading.Lock()

    @cached_property
    def retriever(self) -> Retriever:
        """Retrieval; each verb checks the embedder (check_embedder) before it first touches this, which
        loads the embedder, so that a mismatch is refused without loading it."""
        ws = self.workspace
        return Retriever(self.settings, ws.database, ws.indexes, ws.embedder)

    def ingest(
        self,
        paths: Sequence[Path | str],
        include: list[str] | None = None,
        exclude: list[str] | None = None,
        progress: ProgressFn | None = None,
        ray_address: str | None = None,
    ) -> IngestSummary:
        """Sync ``paths`` into the workspace; with ``ray_address`` ("auto" or a cluster's address) the
        parsing and embedding run on Ray Data (rag.ingest.distributed)."""
        ws = self.workspace
        parts = (self.settings, ws.database, ws.write_lock, ws.indexes, ws.load_embedder)
        ingestor = Ingestor(*parts)
        if ray_address:
            from rag.ingest.distributed import RayIngestor

            ingestor = RayIngestor(*parts, ray_address)
        summary = ingestor.run([Path(p) for p in paths], include, exclude, progress)
        self._forget_gone_chunks()
        return summary

    def search(
        self, query: str, k: int | None = None, filters: Filters | None = None, mode: str | None = None
    ) -> list[Source]:
        """Retrieval only; ``mode`` is dense, lexical or hybrid (default: settings.retrieval_mode)."""
        check_text(query, "the query")
        checked_mode = check_mode(mode)
        check_embedder(self.workspace.database)  # once per question, before any vector is used
        return self.retriever.run(query, k or self.settings.top_k, filters, checked_mode).sources

    # answering ---------------------------------------------------------------------------------------
    @property
    def generator_loaded(self) -> bool:
        return self._pipeline is not None

    def load_generator(self) -> AnswerPipeline:
        """Load the generator and the detector once (first GGUF use converts it, ~30 s)."""
        with self._pipeline_lock:
            if self._pipeline is None:
                from rag.answer.pipeline import AnswerPipeline
                from rag.attribute.detector import Detector
                from rag.generate.batching import DecodeBatcher
                from rag.generate.generator import Generator

                generator = Generator.load(self.settings)
                detector = Detector.for_generator(generator.name, calibrated=self.settings.calibration_dir)
                batch = self.settings.batch_max
                batcher = DecodeBatcher(generator, batch) if batch > 1 else None
                database = self.workspace.database
                self._pipeline = AnswerPipeline(self.settings, database, generator, detector, batcher)
                self._forget_gone_chunks()  # disk units of chunks deleted while no generator was loaded
            return self._pipeline

    def reload_detector(self) -> None:
        """Read this generator's detector again (`rag calibrate` may have put one in use): the next
        answer is scored by it."""
        from rag.attribute.detector import Detector

        if self._pipeline is not None:
            name = self._pipeline.generator.name
            self._pipeline.detector = Detector.for_generator(name, calibrated=self.settings.calibration_dir)

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
        the database is read-only (``workspace.database.stores_answers``). ``guided``: Lookback Lens
        guided decoding (rag.answer.guided); None takes settings.guided."""
        question = check_text(question, "the question").strip()
        checked_mode = check_mode(mode)
        check_embedder(self.workspace.database)  # once per question: before the generator loads
        pipeline = self.load_generator()
        pipeline.generator.check_lengths(question)
        found = self.retriever.run(question, k or self.settings.top_k, filters, checked_mode)
        shown = found.focused(self.settings.context_score_ratio)
        if on_sources:
            on_sources(shown.sources)
        return pipeline.run(question, shown, on_token, on_generation, guided)

    def attribute(
        self, question: str, answer: str, context: str | None = None, chunk_ids: list[int] | None = None
    ) -> Attribution:
        """Attribution of an answer written elsewhere, teacher-forced through our decoder in one pass.
        Sources: the given chunks, else the given context text, else what retrieval finds."""
        from rag.attribute.attribution import attribute

        question = check_text(question, "the question").strip()
        check_text(answer, "the answer", MAX_ANSWER_CHARS)
        if context is not None and (problem := unclean(context)):
            raise BadInput(f"the context {problem}")
        pipeline = self.load_generator()
        pipeline.generator.check_lengths(question, answer, context)
        if chunk_ids:
            with self.workspace.database.sessions() as s:
                sources = sources_for(s, [(int(c), 0.0) for c in chunk_ids if valid_id(int(c))])
            missing = sorted({int(c) for c in chunk_ids} - {x.chunk_id for x in sources})
            if missing:
                raise BadInput(f"unknown chunk ids: {missing[:10]}")
        elif context is not None and context.strip():
            sources = [Source.from_context(context)]
        else:
            check_embedder(self.workspace.database)
            sources = self.retriever.run(question, self.settings.top_k).sources
            if not sources:
                raise BadInput("no sources: give context or chunk_ids, or ingest documents first")
        generation = pipeline.generator.teacher_force(question, sources, answer)
        return attribute(generation, sources, pipeline.detector)

    def get_answer(self, answer_id: str) -> Answer | None:
        from rag.answer.stored import load_answer

        return load_answer(self.workspace.database.sessions, answer_id)

    def answers(self, limit: int = 20, offset: int = 0) -> tuple[list[AnswerSummary], int]:
        """Stored answers, newest first: one page of them and the total."""
        with self.workspace.database.sessions() as s:
            return answer_summaries(s, limit, offset)

    def report_html(self, answer_id: str) -> str | None:
        from rag.report.html import render_html

        answer = self.get_answer(answer_id)
        return render_html(answer) if answer else None

    def documents(self) -> list[DocumentInfo]:
        with self.workspace.database.sessions() as s:
            return document_infos(s)

    def document(self, document_id: int) -> DocumentInfo | None:
        if not valid_id(document_id):
            return None
        with self.workspace.database.sessions() as s:
            found = document_infos(s, document_id)
        return found[0] if found else None

    def delete_document(self, document_id: int) -> bool:
        """Remove a document's chunks from SQL and the indexes, saved at once; False when there is no
        such document. A file that an upload stored in the workspace goes too: nothing else refers to
        it, and a file elsewhere is the user's own, left alone."""
        if not valid_id(document_id):
            return False
        ws = self.workspace
        with ws.write_lock.held():
            info = self.document(document_id)
            ws.indexes.refresh()  # delete from, and then save, the newest snapshot
            if info is None or not ws.documents.delete(document_id):
                return False
            ws.indexes.save()
            stored = Path(info.path)
            if stored.parent == self.settings.uploads_dir:
                stored.unlink(missing_ok=True)
        self._forget_gone_chunks()
        return True

    def _forget_gone_chunks(self) -> None:
        """Free the cached KV of chunks no longer in SQL as they were (deleted or re-ingested). Only
        space is at stake: a cache key holds the chunk's token hash, so nothing stale is ever served."""
        pipeline = self._pipeline
        if pipeline is None:
            return
        cached = pipeline.generator.chunk_kv.chunk_ids()
        if cached:
            with self.workspace.database.sessions() as s:
                live = dict(chunk_texts(s, np.array(sorted(cached), dtype=np.int64)))
            pipeline.generator.chunk_kv.retain(live)
