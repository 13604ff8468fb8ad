"""Two `rag ingest` runs on one workspace at once (real processes, SQLite and PostgreSQL): the write
lock makes the second wait, saying so, and the end state is what one ingest gives. A reader in this
process keeps searching meanwhile and never sees a chunk that SQL does not have."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from rag.config import Settings
from rag.core import Rag
from rag.workspace import Workspace
from tests.conftest import MODELS_CACHE
from tests.docfactory import make_tree
from tests.procs import Watcher, snapshot, start_ingest

pytestmark = pytest.mark.slow  # spawns `rag ingest` processes and loads the embedder

N_FILES = 200


def _corpus(root: Path) -> Path:
    return make_tree(
        root,
        {
            f"shelf-{i % 5}/card-{i:03d}.md": f"# Card {i}\n\nCard {i} lists lighthouse {i} and its "
            f"{i % 9 + 1} keepers.\n"
            for i in range(N_FILES)
        },
    )


def test_two_ingests_at_once_serialise_and_a_reader_keeps_answering(
    settings: Settings, tmp_path: Path
) -> None:
    corpus = _corpus(tmp_path / "corpus")
    procs = [start_ingest(settings, [corpus]) for _ in range(2)]  # both on a fresh workspace

    watcher = Watcher(settings)
    try:
        watcher.wait_for(procs[0], lambda p: p.running > 0)  # the schema exists from here on
    finally:
        watcher.close()
    reader = Rag(settings)
    searches = 0
    while any(p.poll() is None for p in procs):
        for source in reader.search("which lighthouse has seven keepers", k=3):
            assert reader.document(source.document_id) is not None, source
        searches += 1
        time.sleep(0.2)

    results = [p.communicate(timeout=60) for p in procs]
    for proc, (_, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err
    summaries = [json.loads(out) for out, _ in results]
    assert sorted((s["added"], s["unchanged"]) for s in summaries) == [(0, N_FILES), (N_FILES, 0)]
    assert all(s["documents"] == N_FILES and not s["failed"] for s in summaries)
    waited = [err for _, err in results if "waiting for another writer" in err]
    assert len(waited) == 1, [err[-500:] for _, err in results]

    assert Workspace(settings).indexes.check().ok
    reference = Settings(home=tmp_path / "reference", models_cache=MODELS_CACHE)
    single = Rag(reference)
    single.workspace.__dict__["embedder"] = reader.workspace.embedder  # the same model, loaded once
    single.ingest([corpus])
    assert snapshot(settings) == snapshot(reference)
    assert searches > 0
    # The reader picked up the index the writers saved, without being reopened.
    assert reader.search("Card 7 lists lighthouse 7", k=1)[0].path.endswith("card-007.md")
