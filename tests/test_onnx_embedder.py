"""The ONNX Runtime embedder (RAG_EMBED_BACKEND): fp32 gives torch's vectors, so a workspace switches
to it freely; int8 moves them, so it counts as another embedder; the graph is exported once into the
models folder and works offline. Real MiniLM, real ONNX Runtime, real FAISS and SQLite."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ingest.cli import ingest_command
from rag.cli.main import app
from rag.config import DEFAULT_EMBEDDER, Settings
from rag.core import Rag
from rag.embed.embedder import Embedder
from rag.index.embedder_record import EmbedderMismatch
from tests.docfactory import make_tree
from tests.procs import cli_env, rag_command

app.command("ingest")(ingest_command)  # as rag.cli.main.main registers it

FACTS = {
    "bell-rock.md": "# Bell Rock\n\nThe Bell Rock light was first lit in 1811 on a reef off Angus.\n",
    "eddystone.txt": "The fourth Eddystone tower, by John Smeaton, used dovetailed granite blocks.\n",
}
QUESTION = "Who built the tower with dovetailed granite?"
# several batches of 8 and lengths from one token to a chunk's (~120), so sorting and padding count
TEXTS = ["a", "hello world", "The boiler in the basement is serviced every October. " * 12,
         *(f"note {i}: the caretaker turns the hallway lamp off at {i % 12 + 1} o'clock" for i in range(20))]
EXPORTING = "exporting the embedder to ONNX"


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One export for the module's tests (each takes ~10 s)."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def torch_vectors() -> np.ndarray:
    return Embedder(DEFAULT_EMBEDDER).encode(TEXTS)


def test_a_missing_onnxruntime_is_named_with_its_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what an environment without it imports
    with pytest.raises(RuntimeError, match=r"RAG_EMBED_BACKEND=onnx needs onnxruntime, the 'onnx' extra: "
                                           r"pip install \"sightline\[onnx\]\""):
        Embedder(DEFAULT_EMBEDDER, backend="onnx", models_dir=tmp_path)
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_onnx_gives_torchs_vectors_and_exports_once(
    models_dir: Path, torch_vectors: np.ndarray, capfd: pytest.CaptureFixture[str]
) -> None:
    onnx = Embedder(DEFAULT_EMBEDDER, batch_size=8, backend="onnx", models_dir=models_dir)
    assert EXPORTING in capfd.readouterr().err
    vectors = onnx.encode(TEXTS)
    assert vectors.dtype == np.float32 and vectors.shape == torch_vectors.shape
    np.testing.assert_allclose(vectors, torch_vectors, atol=1e-5, rtol=0)
    (graph,) = models_dir.glob("onnx/*/model.onnx")
    written = graph.stat().st_mtime_ns
    again = Embedder(DEFAULT_EMBEDDER, backend="onnx", models_dir=models_dir)
    assert EXPORTING not in capfd.readouterr().err and graph.stat().st_mtime_ns == written
    np.testing.assert_allclose(again.encode(TEXTS[:3]), torch_vectors[:3], atol=1e-5, rtol=0)
    assert not list(models_dir.rglob("*.tmp"))


@pytest.mark.slow
def test_int8_vectors_differ_so_a_workspace_must_be_re_embedded_for_it(
    models_dir: Path, torch_vectors: np.ndarray, tmp_path: Path
) -> None:
    vectors = Embedder(DEFAULT_EMBEDDER, backend="onnx-int8", models_dir=models_dir).encode(TEXTS)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cosines = (vectors * torch_vectors).sum(1)
    assert cosines.min() > 0.85 and np.abs(vectors - torch_vectors).max() > 1e-3

    home = tmp_path / "home"
    Rag(Settings(home=home)).ingest([make_tree(tmp_path / "docs", FACTS)])  # torch's vectors
    onnx = Rag(Settings(home=home, embed_backend="onnx", models_cache=models_dir))
    assert onnx.search(QUESTION)[0].path.endswith("eddystone.txt")  # the same embedder
    with pytest.raises(EmbedderMismatch):
        Rag(Settings(home=home, embed_backend="onnx-int8", models_cache=models_dir)).search(QUESTION)

    env = {"RAG_EMBED_BACKEND": "onnx-int8", "RAG_MODELS_CACHE": str(models_dir)}
    refused = CliRunner().invoke(app, ["search", QUESTION, "--home", str(home)], env=env)
    int8 = f"{DEFAULT_EMBEDDER}+onnx-int8"
    assert refused.exit_code == 1 and refused.stderr.strip() == (
        f"error: this workspace's chunks were embedded with '{DEFAULT_EMBEDDER}' (384 dimensions) but "
        f"RAG_EMBEDDER and RAG_EMBED_BACKEND make '{int8}' ('+onnx-int8': RAG_EMBED_BACKEND=onnx-int8): "
        f"set them back to make '{DEFAULT_EMBEDDER}', or run 'rag index rebuild --re-embed' to embed every "
        f"chunk again with '{int8}'"
    )
    rebuilt = CliRunner().invoke(app, ["index", "rebuild", "--re-embed", "--home", str(home)], env=env)
    assert rebuilt.exit_code == 0 and f"with '{int8}'" in rebuilt.stdout
    found = CliRunner().invoke(app, ["search", QUESTION, "--json", "--home", str(home)], env=env)
    assert found.exit_code == 0 and json.loads(found.stdout)["results"][0]["path"].endswith("eddystone.txt")
    with pytest.raises(EmbedderMismatch):  # and back to torch is refused the same way
        Rag(Settings(home=home)).search(QUESTION)


@pytest.mark.slow
def test_the_onnx_backend_exports_and_serves_offline(tmp_path: Path) -> None:
    """Two `rag` processes with the hub turned off (and no network at all where a namespace can be
    made): the first exports the packaged model and ingests, the second reuses the graph to search."""
    folder = make_tree(tmp_path / "docs", FACTS)
    env = {**cli_env(), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "RAG_EMBED_BACKEND": "onnx"}
    no_network = ["unshare", "--net"] if shutil.which("unshare") and can_unshare_net() else []
    where = ["--home", str(tmp_path / "home")]

    def rag(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*no_network, *rag_command(*args, *where)], env=env, capture_output=True,
                              text=True, timeout=600, check=False)

    ingested = rag("ingest", str(folder), "--json")
    assert ingested.returncode == 0, ingested.stderr
    assert EXPORTING in ingested.stderr and json.loads(ingested.stdout)["added"] == 2
    assert list((tmp_path / "home" / "models" / "onnx").glob("*/model.onnx"))
    searched = rag("search", QUESTION, "--json")
    assert searched.returncode == 0, searched.stderr
    assert EXPORTING not in searched.stderr
    assert json.loads(searched.stdout)["results"][0]["path"].endswith("eddystone.txt")


def can_unshare_net() -> bool:
    return subprocess.run(["unshare", "--net", "true"], capture_output=True, check=False).returncode == 0
