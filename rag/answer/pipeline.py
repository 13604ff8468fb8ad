"""The answer pipeline: retrieve → generate (attention collected in the same pass) → attribute →
abstain when the sources are irrelevant or the answer did not look at them → store."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from rag.answer.guided import guided_generate
from rag.answer.verdict import Verdict, decide
from rag.attribute.attribution import attribute, evidence_spans
from rag.attribute.detector import Detector
from rag.config import Settings
from rag.generate.decoding import Decoder, Generation
from rag.generate.generator import Generator
from rag.retrieve.retriever import Retrieval
from rag.storage.database import Database
from rag.storage.engine import transaction
from rag.storage.orm import AnswerRecord
from rag.text import names_only_a_source
from rag.types import Answer, Attribution, Evidence, Hallucination, Models, Source, Timings

NO_SOURCES = "I can't answer that from your documents: nothing I retrieved is relevant to the question."
NOT_GROUNDED = (
    "I can't give a reliable answer from your documents: the draft answer did not draw on the "
    "retrieved sources, so it was held back."
)
QUOTES_LEAD = "I could not verify a generated answer. Your documents say:"
_MODEL_DECLINED = re.compile(
    r"\b(i (do not|don't|cannot|can't) (know|answer|find)|not (mentioned|stated|provided|found) in|"
    r"(sources|context|documents) (do not|don't) (contain|say|mention))",
    re.IGNORECASE,
)


def quote_answer(quotes: list[Evidence], chunk_ids: list[int]) -> str:
    """The held-back answer's replacement: its evidence verbatim, each cited as the prompt numbered it."""
    cited = " ".join(f"“{q.text.strip()}” [{chunk_ids.index(q.chunk_id) + 1}]" for q in quotes)
    return f"{QUOTES_LEAD} {cited}"


def declined(answer: str) -> bool:
    """True when the model itself said the sources don't hold the answer."""
    return bool(_MODEL_DECLINED.search(answer))


class AnswerPipeline:
    def __init__(
        self,
        settings: Settings,
        database: Database,
        generator: Generator,
        detector: Detector,
        decoder: Decoder | None = None,
    ) -> None:
        self.settings = settings
        self.database = database  # where answers are stored, unless it is read-only
        self.generator = generator
        self.detector = detector
        # a DecodeBatcher where concurrent asks share decoding steps (settings.batch_max > 1)
        self.decoder: Decoder = decoder or generator

    @property
    def abstain_risk(self) -> float:
        """The setting where given, else the level calibrated with the detector."""
        given = self.settings.abstain_risk
        return self.detector.abstain_risk if given is None else given

    def run(
        self,
        question: str,
        retrieval: Retrieval,
        on_token: Callable[[str], None] | None = None,
        on_generation: Callable[[Generation], None] | None = None,
        guided: bool | None = None,
    ) -> Answer:
        """Answer from what retrieval found (the sources shown to the generator).
        ``on_generation`` sees the raw draft with its masses (evaluation keeps its features).
        ``guided`` (default: the setting) decodes with `rag.answer.guided`, alone, outside any batch."""
        started = time.perf_counter()
        sources, relevance, retrieve_ms = retrieval.sources, retrieval.relevance, retrieval.retrieve_ms
        timings = Timings(retrieve_ms=retrieve_ms)
        guided = self.settings.guided if guided is None else guided
        model = Models(generator=self.generator.name, embedder=self.settings.embedder_id,
                             decoding="guided" if guided else "greedy")
        if not sources or relevance < self.settings.min_relevance:
            verdict = decide(relevance=relevance, min_relevance=self.settings.min_relevance, draft=None)
            if on_token:
                on_token(NO_SOURCES)
            method = f"abstained: best source similarity {relevance:.2f} < {self.settings.min_relevance}"
            answer = self._answer(question, NO_SOURCES, sources, None, timings, model, verdict)
            answer.hallucination = Hallucination(0.0, False, method, self.detector.threshold)
        else:
            generation = (self._guided(question, sources, on_token) if guided
                          else self.decoder.generate(question, sources, on_token=on_token))
            if on_generation:
                on_generation(generation)
            timings.prefill_ms, timings.decode_ms = generation.prefill_ms, generation.decode_ms
            t0 = time.perf_counter()
            attribution = attribute(generation, sources, self.detector)
            timings.attribute_ms = (time.perf_counter() - t0) * 1000
            draft = generation.text.strip()
            verdict = decide(relevance=relevance, min_relevance=self.settings.min_relevance, draft=draft,
                             names_a_source=names_only_a_source(draft, sources, question),
                             risk=attribution.hallucination.risk, abstain_risk=self.abstain_risk,
                             declined=declined(draft))
            if verdict.held_back is None:
                answer = self._answer(question, generation.text, sources, attribution, timings, model,
                                      verdict)
            else:  # what the draft looked at is still true: quoted verbatim in its place
                quotes = evidence_spans(generation, sources, limit=2)
                text = quote_answer(quotes, generation.prompt.chunk_ids) if quotes else NOT_GROUNDED
                answer = self._answer(question, text, sources, attribution, timings, model, verdict,
                                      has_quotes=bool(quotes))
                answer.draft, answer.sentences = draft, []
        timings.total_ms = retrieve_ms + (time.perf_counter() - started) * 1000
        if self.database.stores_answers:  # a read-only database: answered, but not kept
            self.store(answer)
        return answer

    def _guided(
        self, question: str, sources: list[Source], on_token: Callable[[str], None] | None
    ) -> Generation:
        s = self.settings
        return guided_generate(self.generator, self.detector, question, sources,
                               candidates=s.guided_candidates, step_tokens=s.guided_step_tokens,
                               on_token=on_token)

    def _answer(
        self,
        question: str,
        text: str,
        sources: list[Source],
        attribution: Attribution | None,
        timings: Timings,
        model: Models,
        verdict: Verdict,
        has_quotes: bool = False,
    ) -> Answer:
        return Answer(
            id=uuid.uuid4().hex,
            question=question,
            answer=text,
            created_at=datetime.now(UTC).isoformat(),
            model=model,
            sources=attribution.sources if attribution else sources,
            sentences=attribution.sentences if attribution else [],
            hallucination=attribution.hallucination
            if attribution
            else Hallucination(0.0, False, "none", self.detector.threshold),
            timings=timings,
            abstained=verdict.held_back is not None or verdict.declined,
            attention_sink=attribution.attention_sink if attribution else 0.0,
            answer_kind=verdict.kind(has_quotes),
            held_back=verdict.held_back,
            held_back_reason=verdict.reason,
        )

    def store(self, answer: Answer) -> None:
        with transaction(self.database.sessions) as s:
            s.add(
                AnswerRecord(
                    id=answer.id,
                    question=answer.question,
                    answer=answer.answer,
                    created_at=datetime.fromisoformat(answer.created_at),
                    risk=answer.hallucination.risk,
                    flagged=answer.hallucination.flagged,
                    report=answer.to_dict(),
                )
            )
