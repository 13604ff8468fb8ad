"""sightline's library: ``Rag`` over a workspace configured by ``Settings``; an ``Answer`` cites each
``Source`` it drew on. The names load on first use (PEP 562), so ``import rag`` stays light: the
parsing worker and the CLI's quick commands import submodules without pulling in torch."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rag.config import Settings
    from rag.core import Rag
    from rag.types import Answer, Source

__all__ = ["Answer", "Rag", "Settings", "Source"]

_HOMES = {"Answer": "rag.types", "Rag": "rag.core", "Settings": "rag.config", "Source": "rag.types"}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'rag' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
