"""The workspace's database: opened and migrated by one process at a time, or opened read-only where
its file (or the home) cannot be written, in which case reads work and writes are refused up front."""

from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path

from sqlalchemy import Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.orm import Session, sessionmaker

from rag.config import Settings
from rag.readonly import ReadOnly, writable
from rag.storage.engine import (
    UNAVAILABLE_ERRORS,
    make_engine,
    read_only_sqlite_url,
    schema_is_current,
    session_factory,
    unavailable,
)

# an unreachable server or unopenable file, an unparseable URL, an unknown scheme
_OPEN_ERRORS: tuple[type[Exception], ...] = (*UNAVAILABLE_ERRORS, ArgumentError, NoSuchModuleError)


class Database:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home_read_only = not writable(settings.home_dir)  # reads work; writes are refused
        self.db_read_only: Path | None = None  # the SQLite file, when it cannot be written
        self.engine: Engine = self._open()
        self.sessions: sessionmaker[Session] = session_factory(self.engine)

    def _open(self) -> Engine:
        """The engine; a database that cannot be reached or opened is one DatabaseUnavailable."""
        try:
            return self._open_and_migrate()
        except _OPEN_ERRORS as exc:
            raise unavailable(self.settings.db_url, exc) from exc

    def _open_and_migrate(self) -> Engine:
        """The engine, with the schema migrated by one process at a time per workspace: two first
        opens at once (two `rag ingest`, or the API and the CLI) otherwise both create the tables and
        one of them fails. A fresh SQLite file is migrated under a temporary name and renamed into
        place, because pysqlite runs DDL outside any transaction: a process killed mid-migration
        would leave half a schema that no later open could migrate ("table ... already exists").
        A SQLite file that cannot be written is opened read-only, and only if its schema is current."""
        url = make_url(self.settings.db_url)
        db_file = None
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            db_file = Path(str(url.database)).resolve()
            if not (writable(db_file) and writable(db_file.parent)):
                self.db_read_only = db_file
        lock = self._schema_lock()
        try:
            if db_file is not None and self.db_read_only:
                return self._open_read_only(db_file)
            if db_file is not None:
                for stale in db_file.parent.glob(f".{db_file.name}.*.new*"):  # a killed first open's
                    stale.unlink(missing_ok=True)
            if db_file is not None and not db_file.exists():
                db_file.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=db_file.parent, prefix=f".{db_file.name}.", suffix=".new")
                os.close(fd)
                try:
                    fresh = make_engine(url.set(database=tmp).render_as_string(hide_password=False))
                    with fresh.connect() as conn:
                        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")  # all in the main file
                    fresh.dispose()
                    os.replace(tmp, db_file)
                finally:
                    for leftover in (tmp, f"{tmp}-wal", f"{tmp}-shm", f"{tmp}-journal"):
                        Path(leftover).unlink(missing_ok=True)
            return make_engine(self.settings.db_url)
        finally:
            if lock is not None:
                fcntl.flock(lock, fcntl.LOCK_UN)
                os.close(lock)

    def _schema_lock(self) -> int | None:
        """The migration lock, held. In a read-only home it is opened read-only (flock needs no write
        access), so a migration through a writable view of the same folder is still waited for; a
        read-only home without one has nobody to wait for."""
        path = self.settings.home_dir / "schema.lock"
        if self.home_read_only:
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                return None
        else:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd

    def _open_read_only(self, db_file: Path) -> Engine:
        if not db_file.exists():
            raise ReadOnly(
                f"there is no database at {db_file} and {db_file.parent} is read-only: "
                "ingest into this workspace where it can be written first"
            )
        engine = make_engine(read_only_sqlite_url(db_file), migrate=False)
        if not schema_is_current(engine):
            engine.dispose()
            raise ReadOnly(
                f"the database {db_file} is read-only and its schema is not this sightline's: "
                "open the workspace once where it can be written, to migrate it"
            )
        return engine

    def close(self) -> None:
        self.engine.dispose()

    @property
    def stores_answers(self) -> bool:
        """False when the database cannot be written (a read-only SQLite file): answers are given
        but not kept. Known at open, so a caller can say so before generating."""
        return self.db_read_only is None

    def check_writable(self) -> None:
        """Refuse a write up front, before anything changes, naming what cannot be written."""
        where = self.settings.home_dir if self.home_read_only else self.db_read_only
        if where is not None:
            raise ReadOnly(
                f"cannot write to the workspace: {where} is read-only (a read-only mount, or no write "
                "permission)"
            )
