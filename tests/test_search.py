"""Search over the sample corpus: each probe question lands on the one document that answers it."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import select

from rag.config import Settings
from rag.core import Rag
from rag.retrieve.retriever import Filters, Retrieval
from rag.storage.orm import Chunk

pytestmark = pytest.mark.slow  # loads the embedder

REPO = Path(__file__).resolve().parent.parent
PROBES = [json.loads(line) for line in (REPO / "tests" / "data" / "probes.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def sample_rag(tmp_path_factory: pytest.TempPathFactory) -> Rag:
    rag = Rag(Settings(home=tmp_path_factory.mktemp("home")))
    summary = rag.ingest([REPO / "data"])
    assert summary.failed == []
    return rag


@pytest.mark.parametrize("probe", PROBES, ids=[p["file"] + ":" + p["expect"][:20] for p in PROBES])
def test_probe_question_finds_its_document(sample_rag: Rag, probe: dict[str, str]) -> None:
    sources = sample_rag.search(probe["question"], k=3)
    assert any(Path(s.path).name == probe["file"] for s in sources), [Path(s.path).name for s in sources]


@pytest.mark.parametrize("mode", ["dense", "lexical", "hybrid"])
def test_withheld_chunks_are_never_retrieved(sample_rag: Rag, mode: str) -> None:
    """`rag calibrate` asks its unanswerable questions with their source withheld."""
    question = "Who rowed out to rescue the survivors of the Forfarshire?"
    found = [s.chunk_id for s in sample_rag.search(question, k=6, mode=mode)]
    assert len(found) >= 2, found  # BM25 returns only chunks sharing a term with the question
    half = len(found) // 2
    withheld = frozenset(found[:half])
    rest = [s.chunk_id for s in sample_rag.search(question, k=6, mode=mode,
                                                  filters=Filters(exclude_chunk_ids=withheld))]
    assert rest and not withheld & set(rest)
    if mode != "hybrid":  # fusion rescales scores over the candidates it is given
        assert rest[: len(found) - half] == found[half:]  # the others keep their order
    with_type = sample_rag.search(question, k=6, mode=mode,
                                  filters=Filters(doc_type="md", exclude_chunk_ids=withheld))
    assert all(s.doc_type == "md" and s.chunk_id not in withheld for s in with_type)


def test_filters_restrict_results(sample_rag: Rag) -> None:
    question = "Who rowed out to rescue the survivors of the Forfarshire?"
    only_md = sample_rag.search(question, k=5, filters=Filters(doc_type="md"))
    assert only_md and all(s.doc_type == "md" for s in only_md)
    samples = str(REPO / "data" / "samples" / "keepers")
    prefixed = sample_rag.search(question, k=5, filters=Filters(path_prefix=samples))
    assert prefixed and all(s.path.startswith(samples) for s in prefixed)
    assert sample_rag.search(question, k=5, filters=Filters(doc_type="nope")) == []


def test_pdf_sources_carry_their_page(sample_rag: Rag) -> None:
    top = sample_rag.search("Which relief vessel found the Flannan Isles lighthouse deserted?", k=1)[0]
    assert top.path.endswith("keepers-lives.pdf") and top.page == 3


@pytest.mark.parametrize("mode", ["dense", "lexical", "hybrid"])
def test_every_mode_finds_an_exact_term_question(sample_rag: Rag, mode: str) -> None:
    sources = sample_rag.search("Which VHF channel turns on a radio-activated fog signal?", k=3, mode=mode)
    assert any(Path(s.path).name == "fog-signals.rst" for s in sources)


def test_lexical_mode_only_returns_chunks_sharing_a_term(sample_rag: Rag) -> None:
    assert sample_rag.search("zzyzx qwertyuiop", k=5, mode="lexical") == []
    assert sample_rag.search("zzyzx qwertyuiop", k=5, mode="dense")


def test_an_unknown_mode_is_refused(sample_rag: Rag) -> None:
    from rag.types import BadInput

    with pytest.raises(BadInput, match="retrieval mode"):
        sample_rag.search("lighthouse", mode="psychic")


def test_the_generator_is_shown_only_sources_near_the_top_score(sample_rag: Rag) -> None:
    found = sample_rag.retriever.run("Who rowed out to rescue the survivors of the Forfarshire?", 4)
    shown = found.focused(0.6).sources
    assert [s.chunk_id for s in shown] == [s.chunk_id for s in found.sources[: len(shown)]]  # a prefix
    assert 1 <= len(shown) < 4 and "Grace Darling" in shown[0].text
    assert all(s.score >= 0.6 * found.sources[0].score for s in shown)
    assert found.focused(0.0).sources == found.sources  # 0 keeps every retrieved source
    negative = [replace(s, score=-0.1 - i) for i, s in enumerate(found.sources)]  # cosines can be < 0
    assert Retrieval(negative, 0.0).focused(0.6).sources == negative


def test_a_query_longer_than_the_model_reads_is_truncated_not_an_error(sample_rag: Rag) -> None:
    """~2,700 embedder tokens, within the 4,000-character limit: past the model's 512 positions."""
    embedder = sample_rag.workspace.embedder
    assert embedder.max_tokens == 254  # MiniLM: 256 with [CLS] and [SEP]
    query = "b7 " * 1333
    assert len(embedder.tokenizer(query, add_special_tokens=False)["input_ids"]) > 512
    kept = "b7 " * (embedder.max_tokens // 2)  # "b7" is two tokens: b ##7
    assert float(embedder.encode([query])[0] @ embedder.encode([kept])[0]) == pytest.approx(1.0, abs=1e-6)
    assert isinstance(sample_rag.search(query, k=3), list)


def test_chunks_never_exceed_what_the_embedder_reads(tmp_path: Path) -> None:
    rag = Rag(Settings(home=tmp_path / "home", chunk_tokens=1000))
    rag.ingest([REPO / "data"])
    with rag.workspace.database.sessions() as s:
        longest = max(t for (t,) in s.execute(select(Chunk.token_count)))
    assert 200 < longest <= rag.workspace.embedder.max_tokens
