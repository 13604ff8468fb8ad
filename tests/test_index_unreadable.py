"""A saved vector index that cannot be read is rebuilt from SQL, and the process says so once (readers
reopen the index on every save: one line per reopen would bury the first)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from rag.config import Settings
from rag.index.vectors import VectorIndex


def test_an_unreadable_index_is_reported_once_and_opens_empty(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(home=tmp_path / "home")
    saved = VectorIndex(tmp_path / "index", 8, "m", settings)
    saved.add(np.array([1, 2], dtype=np.int64), np.eye(2, 8, dtype=np.float32))
    saved.save()
    manifest = json.loads(saved.manifest_path.read_text())
    saved.index_path.write_bytes(b"not a faiss index")  # e.g. a disk that lost the file's blocks

    with caplog.at_level(logging.WARNING, logger="rag.index.vectors"):
        first = VectorIndex.open(tmp_path / "index", 8, "m", settings)
        second = VectorIndex.open(tmp_path / "index", 8, "m", settings)

    assert first.count == second.count == 0  # empty, for reconcile to fill from SQL
    assert manifest["count"] == 2
    lines = [r.getMessage() for r in caplog.records if r.name == "rag.index.vectors"]
    assert len(lines) == 1, lines
    assert "cannot be read" in lines[0] and "rebuilding it from the embeddings in SQL" in lines[0]
