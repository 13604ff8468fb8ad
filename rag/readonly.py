"""Read-only places: a workspace on a read-only mount (or without write permission) still serves
reads, and a write is refused before anything changes, with one line that names the path."""

from __future__ import annotations

import os
from pathlib import Path


class ReadOnly(RuntimeError):
    """A write is needed where it cannot go; the message names the path and what to do."""


def writable(path: Path) -> bool:
    """Whether ``path`` can be written, or created when it does not exist yet (its nearest existing
    folder is writable). ``os.access`` also sees a read-only mount, which chmod cannot make for root."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return os.access(candidate, os.W_OK)
    return False
