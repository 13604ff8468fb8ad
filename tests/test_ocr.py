"""OCR: a scanned page's words found by search, a photo without text reported, unsupported files counted
(one ingest, marked slow: it loads the embedder and the OCR models); and, without the models, the time
budget that stops a long scan with a reason."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from PIL import Image

from rag.config import Settings
from rag.core import Rag
from rag.parse.formats import load, ocr, pdf
from rag.types import LoadError
from tests import formatfactory as ff


@pytest.mark.slow
def test_a_scan_is_found_by_search_and_a_photo_without_text_is_reported(
    sqlite_settings: Settings, tmp_path: Path
) -> None:
    root = tmp_path / "docs"
    root.mkdir()
    ff.make_scanned_pdf(root / "letter.pdf", [["Dear keeper, the Skerryvore lamp", "was relit on Tuesday."]])
    (root / "creach.heic").write_bytes(ff.HEIC_SAMPLE.read_bytes())
    ff.make_photo(root / "holiday.jpg")
    (root / "song.mp3").write_bytes(b"ID3\x04\x00")
    (root / "tool.exe").write_bytes(b"MZ\x90\x00")

    summary = Rag(sqlite_settings).ingest([root]).to_dict()
    assert (summary["added"], summary["failed"]) == (
        2,
        [{"path": str((root / "holiday.jpg").resolve()), "error": "no text found by OCR"}],
    )
    assert summary["skipped"] == {"unsupported": 2}
    assert sorted(Path(p).name for p in summary["unsupported"]) == ["song.mp3", "tool.exe"]

    rag = Rag(sqlite_settings)
    [top, *_] = rag.search("When was the Skerryvore lamp relit?", k=2)
    assert Path(top.path).name == "letter.pdf" and top.page == 1 and "Skerryvore" in top.text
    [top, *_] = rag.search("Creach Ushant", k=2, mode="lexical")
    assert Path(top.path).name == "creach.heic" and "1863" in top.text


def test_a_long_scan_stops_at_the_time_budget_with_how_far_it_got(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a 300-page scan meets under file_timeout_s, with OCR stood in for by 50 ms a page."""

    def slow_ocr(image: Image.Image) -> str:
        time.sleep(0.05)
        return "a page of text"

    monkeypatch.setattr(pdf, "recognise", slow_ocr)
    path = ff.make_scanned_pdf(tmp_path / "scan.pdf", [[f"Page {n}"] for n in range(12)])
    ocr.set_budget(0.3)
    try:
        with pytest.raises(
            LoadError, match=r"scanned pages: OCR read \d of 12 pages in 0 s \(0\.\d s a page here\)"
        ):
            load(path)
    finally:
        ocr.set_budget(None)
    assert load(path).text.count("a page of text") == 12  # no budget: every page is read


def test_ocr_is_not_asked_to_read_a_sliver(tmp_path: Path) -> None:
    """A 5,000 x 3 image made the detector raise; a line of pixels holds no text."""
    path = tmp_path / "line.png"
    Image.new("RGB", (5000, 3), "white").save(path)
    with pytest.raises(LoadError, match=r"^no text found by OCR$"):
        load(path)
