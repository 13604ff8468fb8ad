"""Shared fixtures: a workspace on SQLite and on PostgreSQL, and the packaged generator loaded once.

PostgreSQL tests get a schema of their own (so concurrent runs never collide) on the server at
127.0.0.1:5432, database ``test``. Under CI (``CI=true``) an unreachable server is a failure, never a
silent skip.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from rag.config import Settings

if TYPE_CHECKING:
    from rag.generate.generator import Generator

REPO = Path(__file__).resolve().parent.parent
# Tests whose behaviour does not depend on which model answers use the small generator in fp32
# (teacher forcing then reproduces decoding exactly, and four test processes fit in memory);
# tests of the shipped default (tests/test_default_generator.py) name it. Servers the tests spawn
# inherit these.
SMALL_GENERATOR = "smollm2-135m"
os.environ.setdefault("RAG_GENERATOR", SMALL_GENERATOR)
os.environ.setdefault("RAG_QUANTIZE", "none")
PG_BASE = os.environ.get("RAG_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
# Converted generator weights are cached across test runs (the first GGUF conversion takes ~30 s).
MODELS_CACHE = Path(os.environ.get("RAG_TEST_MODELS", REPO / ".sightline" / "test-models"))


def _pg_reachable() -> str | None:
    import sqlalchemy as sa

    try:
        engine = sa.create_engine(PG_BASE)
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        engine.dispose()
        return None
    except Exception as exc:  # any driver error means the server is not usable
        return str(exc).splitlines()[0]


@pytest.fixture(scope="session")
def pg_available() -> None:
    problem = _pg_reachable()
    if problem is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"PostgreSQL at {PG_BASE} is required under CI: {problem}")
    pytest.skip(f"PostgreSQL not reachable ({problem})")


@contextmanager
def pg_schema() -> Iterator[str]:
    """A database URL whose connections live in a fresh PostgreSQL schema, dropped afterwards."""
    import sqlalchemy as sa

    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_BASE, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{PG_BASE}?options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def pg_url(pg_available: None) -> Iterator[str]:
    """A URL whose connections live in a fresh schema, dropped afterwards."""
    with pg_schema() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'rag.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    """A fresh workspace on each database backend."""
    return Settings(home=tmp_path / "home", database_url=db_url, models_cache=MODELS_CACHE)


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> Settings:
    """A fresh workspace on SQLite only, for tests that are not about storage."""
    return Settings(home=tmp_path / "home", models_cache=MODELS_CACHE)


@pytest.fixture(scope="session")
def generator(tmp_path_factory: pytest.TempPathFactory) -> Generator:
    """The small generator (SMALL_GENERATOR, fp32), at most 40 new tokens, loaded once per test session
    for every module that asks (the first conversion into MODELS_CACHE takes ~30 s, a load then ~1 s)."""
    from rag.generate.generator import Generator  # torch and transformers: not for the fast lane's start

    home = tmp_path_factory.getbasetemp() / "generator-home"
    return Generator.load(Settings(home=home, models_cache=MODELS_CACHE, max_new_tokens=40))
