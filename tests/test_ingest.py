"""`rag ingest` sync semantics on a real workspace (real MiniLM, real FAISS, SQLite and PostgreSQL)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import faiss
import numpy as np
import pytest

from rag.config import Settings
from rag.core import Rag
from rag.index import VectorIndex
from tests.docfactory import make_binary_with_txt_suffix, make_corrupt_pdf, make_document, make_tree

pytestmark = pytest.mark.slow  # loads the embedder and spawns parser workers

FACTS = {
    "beacons/bell-rock.md": "# Bell Rock\n\nThe Bell Rock light was first lit in 1811 on a reef off Angus.\n",
    "beacons/eddystone.txt": "The fourth Eddystone tower, by John Smeaton, used dovetailed granite blocks.\n",
    "beacons/notes/fog.md": "# Fog\n\nA diaphone fog horn gives a deep grunt at the end of each blast.\n",
}


def _touch_later(path: Path) -> None:
    later = time.time() + 5
    os.utime(path, (later, later))


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "docs", FACTS)


def paths_in(rag: Rag) -> set[str]:
    return {d.path for d in rag.documents()}


def test_ingest_then_search_finds_the_right_document(settings: Settings, corpus: Path) -> None:
    rag = Rag(settings)
    summary = rag.ingest([corpus])
    assert (summary.added, summary.updated, summary.unchanged, summary.deleted) == (3, 0, 0, 0)
    assert summary.failed == [] and summary.documents == 3 and summary.chunks >= 3
    top = rag.search("Who built the tower with dovetailed granite?", k=3)[0]
    assert top.path.endswith("eddystone.txt")
    source_text = (corpus / "beacons/eddystone.txt").read_text()
    assert source_text[top.char_start : top.char_end] == top.text
    assert rag.workspace.check_indexes().ok


def test_resync_unchanged_edited_deleted_renamed(settings: Settings, corpus: Path) -> None:
    rag = Rag(settings)
    rag.ingest([corpus])
    ids_before = {d.path: d.id for d in rag.documents()}

    again = rag.ingest([corpus])
    assert (again.added, again.updated, again.unchanged, again.deleted) == (0, 0, 3, 0)

    fog = corpus / "beacons/notes/fog.md"
    fog.write_text("# Fog signals\n\nA siren fog signal uses a rotating disc to chop compressed air.\n")
    _touch_later(fog)
    (corpus / "beacons/bell-rock.md").unlink()
    (corpus / "beacons/eddystone.txt").rename(corpus / "beacons/smeaton.txt")
    summary = rag.ingest([corpus])
    assert (summary.added, summary.updated, summary.unchanged, summary.deleted) == (1, 1, 0, 2)
    assert summary.documents == 2

    docs = {Path(p).name for p in paths_in(rag)}
    assert docs == {"fog.md", "smeaton.txt"}
    assert {d.id for d in rag.documents() if d.path == str(fog)} == {ids_before[str(fog)]}
    hits = rag.search("rotating disc chops compressed air", k=1)
    assert hits[0].path == str(fog) and "siren" in hits[0].text
    assert not any("diaphone" in s.text for s in rag.search("diaphone grunt", k=5))
    assert not any(s.path.endswith("bell-rock.md") for s in rag.search("Bell Rock 1811", k=5))
    assert rag.workspace.check_indexes().ok


def test_sync_of_a_subfolder_leaves_the_rest_alone(settings: Settings, corpus: Path) -> None:
    rag = Rag(settings)
    rag.ingest([corpus])
    (corpus / "beacons/notes/fog.md").unlink()
    summary = rag.ingest([corpus / "beacons/notes"])
    assert summary.deleted == 1 and summary.documents == 2


def test_bad_files_are_reported_and_the_rest_ingests(settings: Settings, corpus: Path) -> None:
    make_corrupt_pdf(corpus / "broken.pdf")
    make_binary_with_txt_suffix(corpus / "image.txt")
    make_document(corpus / "good.pdf", "The Skerryvore light can be seen 18 nautical miles away.")
    rag = Rag(settings)
    summary = rag.ingest([corpus])
    failed = {Path(f.path).name: f.error for f in summary.failed}
    assert set(failed) == {"broken.pdf", "image.txt"}
    assert all(reason for reason in failed.values())
    assert summary.added == 4
    assert rag.search("Skerryvore nautical miles", k=1)[0].path.endswith("good.pdf")
    statuses = {Path(d.path).name: d.status for d in rag.documents()}
    assert statuses["broken.pdf"] == "failed" and statuses["good.pdf"] == "ok"


def test_a_failed_file_is_retried_once_fixed(settings: Settings, corpus: Path) -> None:
    bad = make_corrupt_pdf(corpus / "late.pdf")
    rag = Rag(settings)
    assert len(rag.ingest([corpus]).failed) == 1
    make_document(bad, "The Fastnet rock light is off the south coast of Ireland.")
    summary = rag.ingest([corpus])
    assert summary.failed == [] and summary.updated == 1
    assert rag.search("Fastnet rock Ireland", k=1)[0].path == str(bad)


def test_excluded_files_are_not_ingested(settings: Settings, corpus: Path) -> None:
    rag = Rag(settings)
    summary = rag.ingest([corpus], exclude=["beacons/notes/*"])
    assert summary.added == 2
    assert not any("fog.md" in p for p in paths_in(rag))


def test_index_check_detects_a_broken_index_and_rebuild_repairs_it(settings: Settings, corpus: Path) -> None:
    rag = Rag(settings)
    rag.ingest([corpus])
    index_file = settings.index_dir / "vectors.faiss"
    # Break it: drop one vector from the saved index behind the manifest's back.
    damaged = faiss.read_index(str(index_file))
    damaged.remove_ids(faiss.IDSelectorBatch(np.array([damaged.id_map.at(0)], dtype=np.int64)))
    faiss.write_index(damaged, str(index_file))

    check = Rag(settings).workspace.check_indexes()
    assert not check.ok and "MISMATCH" in check.describe()
    assert Rag(settings).workspace.rebuild_indexes() == check.db_count
    assert Rag(settings).workspace.check_indexes().ok


def test_a_missing_index_is_rebuilt_from_sql_on_open(settings: Settings, corpus: Path) -> None:
    rag = Rag(settings)
    rag.ingest([corpus])
    shutil.rmtree(settings.index_dir)
    fresh = Rag(settings)
    assert fresh.search("dovetailed granite", k=1)[0].path.endswith("eddystone.txt")
    fresh.workspace.reconcile()
    assert fresh.workspace.check_indexes().ok
    assert VectorIndex.open(settings.index_dir, 384, settings.embedder, settings).count > 0


def test_deleting_a_document_removes_it_from_search(settings: Settings, corpus: Path) -> None:
    rag = Rag(settings)
    rag.ingest([corpus])
    doc = next(d for d in rag.documents() if d.path.endswith("eddystone.txt"))
    assert rag.delete_document(doc.id)
    assert not any(s.document_id == doc.id for s in rag.search("dovetailed granite Smeaton", k=5))
    assert not rag.delete_document(doc.id)
    assert rag.workspace.check_indexes().ok


def test_a_path_that_does_not_exist_is_an_error(sqlite_settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file"):
        Rag(sqlite_settings).ingest([tmp_path / "nope"])
