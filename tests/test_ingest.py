"""`rag ingest` sync semantics on a real workspace (real MiniLM, real FAISS, SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import faiss
import numpy as np
import pytest
import typer
from click.testing import Result as CliResult
from typer.testing import CliRunner

from ingest.cli import ingest_command
from rag.config import Settings
from rag.core import Rag
from rag.index.snapshots import current_folder
from rag.index.vectors import VectorIndex
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
    assert rag.workspace.indexes.check().ok


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
    assert rag.workspace.indexes.check().ok


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
    index_file = current_folder(settings.index_dir) / "vectors.faiss"
    # Break it: drop one vector from the saved index behind the manifest's back.
    damaged = faiss.read_index(str(index_file))
    damaged.remove_ids(faiss.IDSelectorBatch(np.array([damaged.id_map.at(0)], dtype=np.int64)))
    faiss.write_index(damaged, str(index_file))

    check = Rag(settings).workspace.indexes.check()
    assert not check.ok and "MISMATCH" in check.describe()
    assert Rag(settings).workspace.indexes.rebuild() == check.db_count
    assert Rag(settings).workspace.indexes.check().ok


def test_a_missing_index_is_rebuilt_from_sql_on_open(settings: Settings, corpus: Path) -> None:
    rag = Rag(settings)
    rag.ingest([corpus])
    shutil.rmtree(settings.index_dir)
    fresh = Rag(settings)
    assert fresh.search("dovetailed granite", k=1)[0].path.endswith("eddystone.txt")
    fresh.workspace.indexes.reconcile()
    assert fresh.workspace.indexes.check().ok
    assert VectorIndex.open(current_folder(settings.index_dir), 384, settings.embedder, settings).count > 0


def test_deleting_a_document_removes_it_from_search(settings: Settings, corpus: Path) -> None:
    rag = Rag(settings)
    rag.ingest([corpus])
    doc = next(d for d in rag.documents() if d.path.endswith("eddystone.txt"))
    assert rag.delete_document(doc.id)
    assert not any(s.document_id == doc.id for s in rag.search("dovetailed granite Smeaton", k=5))
    assert not rag.delete_document(doc.id)
    assert rag.workspace.indexes.check().ok


def test_a_path_that_does_not_exist_is_an_error(sqlite_settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file"):
        Rag(sqlite_settings).ingest([tmp_path / "nope"])


def _cli_ingest(settings: Settings, folder: Path, *extra: str) -> CliResult:
    """`rag ingest` in-process: the command the console script registers (``rag.cli.main.main``)."""
    cli = typer.Typer()
    cli.callback()(lambda: None)  # a group, so the command keeps its name
    cli.command("ingest")(ingest_command)
    args = ["ingest", str(folder), "--home", str(settings.home), "--database-url", settings.db_url, *extra]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    return result


def test_a_copy_under_another_name_is_reported_and_ingested_once_the_original_goes(
    settings: Settings, tmp_path: Path
) -> None:
    text = "# Skerry\n\nThe Skerry light was painted in red and white bands by Ottilie Brand.\n"
    folder = make_tree(tmp_path / "copies", {"a.md": text, "b.md": text})
    a, b = folder / "a.md", folder / "b.md"

    first = json.loads(_cli_ingest(settings, folder, "--json").stdout)
    [doc] = Rag(settings).documents()
    assert doc.path == str(a) and (first["added"], first["documents"]) == (1, 1)
    assert first["duplicates"] == [{"path": str(b), "document_id": doc.id, "of_path": str(a)}]

    again = _cli_ingest(settings, folder)  # re-checked, and said in words
    said = f"duplicate: {b} has the same content as document {doc.id} ({a}); not ingested again"
    assert said in again.stdout
    assert "unchanged 1" in again.stdout and "duplicate 1" in again.stdout

    a.unlink()
    rag = Rag(settings)
    last = rag.ingest([folder])
    assert (last.added, last.deleted, last.duplicates) == (1, 1, [])
    assert paths_in(rag) == {str(b)}
    assert rag.search("Who painted the Skerry light?", k=1)[0].path == str(b)
    assert rag.workspace.indexes.check().ok


def test_a_file_changed_into_a_copy_loses_its_old_row_and_chunks(settings: Settings, tmp_path: Path) -> None:
    folder = make_tree(tmp_path / "docs", FACTS)
    rag = Rag(settings)
    rag.ingest([folder])
    bell, fog = folder / "beacons/bell-rock.md", folder / "beacons/notes/fog.md"
    original = next(d for d in rag.documents() if d.path == str(bell))
    fog.write_bytes(bell.read_bytes())
    _touch_later(fog)

    summary = rag.ingest([folder])
    assert [(d.path, d.document_id) for d in summary.duplicates] == [(str(fog), original.id)]
    assert (summary.updated, summary.deleted, summary.documents) == (0, 0, 2)
    assert str(fog) not in paths_in(rag)
    assert not any("diaphone" in s.text for s in rag.search("diaphone fog horn grunt", k=5))
    assert rag.workspace.indexes.check().ok


def test_a_copy_of_content_its_original_loses_in_the_same_run_is_ingested(
    settings: Settings, tmp_path: Path
) -> None:
    """The original's row still holds the old content when the copy is looked at: whether the original
    sorts before the copy (its update waits in the embedding batch) or after it (not read yet)."""
    old_a, old_z = "The Ardnish light has a green sector.\n", "The Zennor light flashes twice.\n"
    folder = make_tree(tmp_path / "docs", {"a.txt": old_a, "z.txt": old_z})
    rag = Rag(settings)
    rag.ingest([folder])
    changed = {"a.txt": "Ardnish was automated in 1988.\n", "z.txt": "Zennor was rebuilt in stone.\n"}
    make_tree(folder, {**changed, "b.txt": old_a, "y.txt": old_z})
    for name in ("a.txt", "z.txt"):
        _touch_later(folder / name)

    summary = rag.ingest([folder])
    assert (summary.added, summary.updated, summary.duplicates) == (2, 2, [])
    assert summary.documents == 4 and rag.workspace.indexes.check().ok


def test_deleting_a_document_removes_its_uploaded_file_but_never_the_users_own(
    settings: Settings, corpus: Path
) -> None:
    """The rule lives in the library, so `rag docs rm` and DELETE /v1/documents/{id} both keep it."""
    uploads = settings.uploads_dir
    uploads.mkdir(parents=True, exist_ok=True)
    stored = make_tree(uploads, {"ab12-lamp.txt": "The lamp room holds a first-order Fresnel lens.\n"})
    stored_file = stored / "ab12-lamp.txt"
    rag = Rag(settings)
    rag.ingest([corpus, stored_file])
    ids = {Path(d.path).name: d.id for d in rag.documents()}

    assert rag.delete_document(ids["ab12-lamp.txt"])
    assert not stored_file.exists()
    assert rag.delete_document(ids["eddystone.txt"])
    assert (corpus / "beacons/eddystone.txt").exists()
    assert not rag.delete_document(ids["eddystone.txt"])
    assert paths_in(rag) == {str(corpus / "beacons/bell-rock.md"), str(corpus / "beacons/notes/fog.md")}
    assert rag.workspace.indexes.check().ok
