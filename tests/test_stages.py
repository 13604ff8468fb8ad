"""Each pipeline stage is built from the workspace parts it uses and works without the others: a
Retriever over an index set filled without any Ingestor or generator, and an Ingestor with no
Retriever or generator. Real SQLite, FAISS, BM25 and the packaged embedder."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from rag.config import Settings
from rag.embed.embedder import Embedder
from rag.index.derived import IndexSet
from rag.ingest.documents import DocumentStore
from rag.ingest.records import Pending
from rag.ingest.sync import Ingestor
from rag.parse.scan import ScannedFile
from rag.retrieve.retriever import MODES, Retriever
from rag.storage.database import Database
from rag.storage.queries import chunk_ids
from rag.storage.writelock import WriteLock
from rag.types import ChunkSpan, LoadedDocument
from tests.docfactory import make_tree

pytestmark = pytest.mark.slow  # loads the embedder

FACTS = {
    "bees.txt": "Honey bees dance in the hive to tell the others where the flowers are.",
    "tides.txt": "The pull of the moon raises the ocean tides twice a day.",
}


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder(Settings().embedder)


def open_parts(settings: Settings, embedder_dim: Callable[[], int]) -> tuple[Database, WriteLock, IndexSet]:
    database = Database(settings)
    lock = WriteLock(settings.home_dir, database.check_writable)
    return database, lock, IndexSet(settings, database, lock, embedder_dim)


def no_model() -> int:
    raise AssertionError("the index set asked for the model's dimension")


def stored_by_hand(store: DocumentStore, embedder: Embedder, folder: Path) -> None:
    """Each fact as a one-chunk document, written as an ingest writes it but with no Ingestor."""
    for name, text in FACTS.items():
        file = ScannedFile(folder / name, folder, len(text), 0.0)
        doc = LoadedDocument(text, name, "txt", "text/plain")
        sha256 = hashlib.sha256(text.encode()).hexdigest()
        pending = Pending(file, sha256, doc, [ChunkSpan(text, 0, len(text), 16)], None)
        store.store(pending, embedder.encode([text]), claim_embedder=True)


def test_a_retriever_needs_only_an_index_set_the_database_and_the_embedder(
    sqlite_settings: Settings, embedder: Embedder, tmp_path: Path
) -> None:
    database, lock, indexes = open_parts(sqlite_settings, lambda: embedder.dim)
    with lock.held():
        stored_by_hand(DocumentStore(database, lock, indexes), embedder, tmp_path)
        indexes.save()
    indexes.close()
    database.close()

    # A reader of its own: it loads the saved snapshot, and its dimension from the snapshot's manifest.
    database, _, indexes = open_parts(sqlite_settings, no_model)
    retriever = Retriever(sqlite_settings, database, indexes, embedder)
    question = "How do bees tell the hive where the flowers are?"
    expected = float(embedder.encode([FACTS["bees.txt"]])[0] @ embedder.encode([question])[0])
    for mode in MODES:
        found = retriever.run(question, k=1, mode=mode)
        assert [Path(s.path).name for s in found.sources] == ["bees.txt"], mode
        assert found.relevance == pytest.approx(expected, abs=1e-5), mode
    indexes.close()
    database.close()


def test_an_ingestor_needs_no_retriever_and_no_generator(
    sqlite_settings: Settings, embedder: Embedder, tmp_path: Path
) -> None:
    folder = make_tree(tmp_path / "docs", FACTS)
    database, lock, indexes = open_parts(sqlite_settings, lambda: embedder.dim)
    summary = Ingestor(sqlite_settings, database, lock, indexes, lambda: embedder).run([folder])
    assert (summary.added, summary.documents, summary.failed) == (2, 2, [])
    assert indexes.check().ok
    with database.sessions() as s:
        in_sql = chunk_ids(s)
    with indexes.reading():
        assert np.array_equal(np.sort(indexes.vectors.ids()), np.sort(in_sql))
        assert sorted(indexes.lexical.ids().tolist()) == sorted(in_sql.tolist())
    indexes.close()
    database.close()
