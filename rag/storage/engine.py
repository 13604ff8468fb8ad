"""Engine and sessions; a fresh or older workspace is migrated to the newest schema on open."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.exc import ArgumentError, InterfaceError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

# The migrations ship inside the package (package data), so a plain `pip install .` finds them;
# the repository's top-level alembic/ is a link to this folder, for `alembic` run from the checkout.
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
CONNECT_TIMEOUT_S = 10  # a PostgreSQL host that never answers fails in seconds, not minutes

# What says "the database cannot be used right now" (as opposed to a bug in a query): the server is
# down or refuses us, the file cannot be opened, the URL names no database we can talk to.
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (OperationalError, InterfaceError)


class DatabaseUnavailable(RuntimeError):
    """The database cannot be reached or opened. The message is one line that names it (password
    hidden) and says why, e.g. ``cannot connect to the database at …: connection refused``."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = redact(url)
        self.reason = reason
        super().__init__(f"cannot connect to the database at {self.url}: {reason}")


# Everything that means "the database cannot be used right now": the REST service answers 503.
DATABASE_DOWN: tuple[type[Exception], ...] = (DatabaseUnavailable, *UNAVAILABLE_ERRORS)


def redact(url: str) -> str:
    """``url`` with any password replaced by ***, even when SQLAlchemy cannot parse it."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return re.sub(r"(//[^/:@]*:)[^@/]*@", r"\1***@", url)


def failure_reason(exc: BaseException) -> str:
    """The driver's reason in a few words: the last clause of its first line ("connection refused",
    'database "x" does not exist', "unable to open database file")."""
    if isinstance(exc, NoSuchModuleError):
        scheme = str(exc).rsplit(":", 1)[-1].strip()
        return f"unknown database scheme {scheme!r}; use sqlite:///PATH or postgresql+psycopg://HOST/DB"
    if isinstance(exc, ArgumentError):
        return "not a database URL; use sqlite:///PATH or postgresql+psycopg://HOST/DB"
    orig = getattr(exc, "orig", None) or exc
    first = next((line.strip() for line in str(orig).splitlines() if line.strip()), type(orig).__name__)
    reason = re.split(r":\s+", first)[-1].strip() or first
    return reason[:1].lower() + reason[1:]


def unavailable(url: str, exc: BaseException) -> DatabaseUnavailable:
    return DatabaseUnavailable(url, failure_reason(exc))


def alembic_config(url: str) -> Config:
    if not (MIGRATIONS_DIR / "env.py").is_file():
        raise RuntimeError(f"migrations not found at {MIGRATIONS_DIR}; reinstall sightline")
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")  # ON DELETE CASCADE for chunks
    cur.execute("PRAGMA journal_mode=WAL")  # readers (the API) keep reading while ingest writes
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def make_engine(url: str, migrate: bool = True) -> Engine:
    """Create the engine and bring the schema to head (Alembic owns the schema)."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        connect_args = {"connect_timeout": CONNECT_TIMEOUT_S} if url.startswith("postgresql") else {}
        engine = create_engine(url, pool_pre_ping=True, connect_args=connect_args)
    if migrate:
        cfg = alembic_config(url)
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    return engine


def read_only_sqlite_url(db_file: Path) -> str:
    """A URL that opens ``db_file`` read-only. ``immutable`` because a WAL database cannot be opened
    with plain ``mode=ro`` where its -shm file cannot be created (a read-only mount); but a non-empty
    -wal file holds commits that the main file lacks and that ``immutable`` would not read."""
    wal = Path(f"{db_file}-wal")
    query = {"mode": "ro", "uri": "true"}
    if not (wal.exists() and wal.stat().st_size > 0):
        query["immutable"] = "1"
    url = make_url("sqlite://").set(database=f"file:{quote(str(db_file))}", query=query)
    return url.render_as_string(hide_password=False)


def schema_is_current(engine: Engine) -> bool:
    """Whether the database is at the newest migration, found by reading only (a read-only
    database cannot be migrated, so it is checked instead)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    with engine.connect() as conn:
        current = set(MigrationContext.configure(conn).get_current_heads())
    script = ScriptDirectory.from_config(alembic_config(engine.url.render_as_string(hide_password=False)))
    return current == set(script.get_heads())


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error."""
    with factory() as session, session.begin():
        yield session
