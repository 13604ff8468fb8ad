"""The package's public face: `rag.Rag`, `rag.Settings`, `rag.Answer`, `rag.Source`, the very classes
of their modules, reachable without loading torch (the parsing worker and quick commands import rag)."""

from __future__ import annotations

import subprocess
import sys

import pytest

import rag
from rag.config import Settings
from rag.core import Rag
from rag.types import Answer, Source


def test_the_public_names_are_the_library_classes() -> None:
    assert (rag.Rag, rag.Settings, rag.Answer, rag.Source) == (Rag, Settings, Answer, Source)
    assert sorted(rag.__all__) == ["Answer", "Rag", "Settings", "Source"]
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = rag.Nope  # type: ignore[attr-defined]


@pytest.mark.slow  # a fresh interpreter: this one has torch loaded by other tests
def test_the_public_face_loads_without_torch() -> None:
    code = "import sys, rag; [getattr(rag, n) for n in rag.__all__]; print('torch' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "False", done.stdout + done.stderr
