"""A non-editable install runs the demo: the wheel carries the migrations, the detector and the
report template, so `rag ingest` and `rag ask` work from any folder, far from the checkout.

The wheel is installed with ``--target`` next to this environment's dependencies (installing torch
into a fresh venv would take minutes); PYTHONPATH puts it ahead of the editable checkout, and the
test checks that the package really was imported from the wheel."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import MODELS_CACHE, REPO
from tests.procs import cli_env

pytestmark = pytest.mark.slow  # builds a wheel, spawns the CLI, loads both models


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done.stdout


def test_a_wheel_install_ingests_and_answers_from_another_folder(tmp_path: Path) -> None:
    wheels, site, elsewhere = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**cli_env(), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    pip = [sys.executable, "-m", "pip", "-q"]
    # Built from a copy: an in-tree build leaves build/ behind, whose stale files a later wheel would ship.
    source = tmp_path / "source"
    skip = shutil.ignore_patterns(".*", "build", "dist", "*.egg-info", "__pycache__", "results")
    shutil.copytree(REPO, source, symlinks=True, ignore=skip)
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(source)], tmp_path, env)
    (wheel,) = wheels.glob("sightline-*.whl")
    _run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], tmp_path, env)
    detector = "attribute/detectors/Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.json"
    for shipped in ("storage/migrations/env.py", "storage/migrations/versions", detector, "report/templates"):
        assert (site / "rag" / shipped).exists(), shipped

    env = {**env, "PYTHONPATH": str(site), "RAG_HOME": str(elsewhere / ".sightline")}
    env["RAG_MODELS_CACHE"] = str(MODELS_CACHE)
    where = _run([sys.executable, "-c", "import rag; print(rag.__file__)"], elsewhere, env)
    assert Path(where.strip()).is_relative_to(site)  # the wheel, not the checkout
    rag = [str(site / "bin" / "rag")]
    assert Path(rag[0]).exists()

    summary = json.loads(_run([*rag, "ingest", str(REPO / "data" / "samples"), "--json"], elsewhere, env))
    assert summary["added"] > 0 and not summary["failed"]
    answer = json.loads(
        _run(
            [*rag, "ask", "Who rowed out to rescue the survivors of the Forfarshire?", "--json"],
            elsewhere,
            env,
        )
    )
    assert answer["answer"] and answer["sources"]
    assert (elsewhere / ".sightline" / "rag.db").exists()
