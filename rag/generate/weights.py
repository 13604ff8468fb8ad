"""Loading a generator: named split GGUFs assembled and checked, GGUF converted once into a
transformers folder, and dynamic int8 on CPU. Kept apart from `rag.generate.generator`, which only decodes."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rag.generate.attention import ATTENTION
from rag.readonly import ReadOnly, writable
from rag.resources import GENERATORS, SplitGGUF, resolve_model_path


def _gguf_target(models_dir: Path, gguf_name: str) -> Path:
    return models_dir / gguf_name.removesuffix(".gguf")


def require_convertible(spec: str, models_dir: Path) -> None:
    """Refuse at once, not after the ~30 s GGUF load, when the conversion could not be saved."""
    if not writable(models_dir):
        raise ReadOnly(
            f"the generator {spec} is not converted yet and {models_dir} is read-only: run `rag ask` once "
            "where the workspace can be written, or set RAG_MODELS_CACHE to a writable folder"
        )


def convert_gguf(gguf_path: Path, target: Path) -> None:
    """Dequantize a GGUF file into a transformers folder once, so later loads take ~1 s, not ~30 s.

    Written to a temp folder beside the target, then renamed: a crash never leaves a half-converted
    model behind, and of two processes converting at once the second simply keeps the first's."""
    try:
        import accelerate  # noqa: F401  transformers needs it to read GGUF files
    except ImportError as e:
        raise RuntimeError("reading GGUF needs the 'accelerate' package: pip install accelerate") from e
    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model: Any = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    model.hf_quantizer = None  # the weights are plain tensors now; save_pretrained must not re-quantize
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.converting-"))
    tmp.chmod(0o755)  # mkdtemp makes it private; the model folder is not a secret
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _bytes_bar(label: str) -> Callable[[int, int], None]:
    """A tqdm bar on stderr for a long one-off step (assembling parts), quiet when not a terminal."""
    from tqdm import tqdm

    bar: Any = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, unit="B", unit_scale=True, desc=label, leave=False, disable=None)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return update


def load_causal_lm(
    spec: str, models_dir: Path, device: str = "cpu", quantize: str = "none"
) -> tuple[Any, Any, str]:
    """(model, tokenizer, name) for a model spec; GGUF files are converted once into models_dir.

    A named split model is assembled from its parts first (sha256 checked) and the assembled GGUF is
    removed once converted: only the converted folder is needed after that."""
    named = GENERATORS.get(spec)
    if isinstance(named, SplitGGUF):
        target = _gguf_target(models_dir, named.filename)
        if not (target / "config.json").exists():
            require_convertible(spec, models_dir)
            gguf = Path(resolve_model_path(spec, models_dir, _bytes_bar(f"assembling {named.filename}")))
            convert_gguf(gguf, target)
            gguf.unlink(missing_ok=True)
        path, name = str(target), target.name
    else:
        path = resolve_model_path(spec)
        name = Path(path).name if Path(path).exists() else path
        if path.endswith(".gguf"):
            target = _gguf_target(models_dir, Path(path).name)
            if not (target / "config.json").exists():
                require_convertible(spec, models_dir)
                convert_gguf(Path(path), target)
            path, name = str(target), target.name
    # fp32 on CPU (fp16 matmuls are slow there); bf16 on accelerators. Masses are summed in fp32.
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    tokenizer = AutoTokenizer.from_pretrained(path)
    model: Any = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation=ATTENTION)
    model = model.to(device).eval()
    if quantize == "int8":
        model = quantize_int8(model)
        name = f"{name}+int8"
    return model, tokenizer, name


def quantize_int8(model: Any) -> Any:
    """Dynamic int8 for every linear layer (weights int8, activations quantized per batch); attention
    itself, and so the masses, stay in fp32. CPU only: fbgemm/qnnpack kernels.

    One scale per weight tensor (the default qconfig): per-channel scales did not contain the gold
    answer more often, and the shipped detectors were fitted on per-tensor drafts. torch.ao, not
    torchao (which the deprecation points to): torchao's int8 configs decode several times slower in
    eager mode on CPU. Figures: docs/history.md#generators-and-int8."""
    import warnings

    with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao
        warnings.simplefilter("ignore")
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
