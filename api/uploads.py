"""Uploads and deletions: uploaded files onto disk, under names the service makes up, then ingested;
files that no document names removed; documents deleted. All of it on the writer thread
(api.executors), under the workspace write lock.

Nothing of the client's file name is trusted as a path: only its last component's stem, reduced to
``[A-Za-z0-9._-]``, is kept so `rag docs list` stays readable, and its suffix when a loader supports
it. The name leads with the content's sha256, so uploading the same file again maps to the same path
and the ingest sync reports it unchanged instead of storing a duplicate. The same content under another
name maps to another path: the ingest reports it as a duplicate of the existing document, and the
stored file is removed.

An upload stores its files and ingests them under the write lock, so that no other process's
clean-up sees a stored file before its row exists. Files left without a row (an ingest that failed,
or a process killed mid-way, and half-written ``.part`` files) are removed after a failed ingest and
at start.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from fastapi import HTTPException, UploadFile
from sqlalchemy.exc import SQLAlchemyError

from api.executors import Executors
from api.schemas import IngestSummaryOut, UploadedOut, UploadStatus
from rag.core import Rag
from rag.parse.formats import SUPPORTED_SUFFIXES
from rag.readonly import ReadOnly
from rag.storage.database import Database
from rag.storage.queries import documents_under
from rag.storage.writelock import WriteLock

logger = logging.getLogger("sightline.api")

_COPY_CHUNK = 1 << 20
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_STEM = 80


@dataclass
class StoredUpload:
    filename: str  # the client's last path component, for the response
    path: Path
    size: int
    created: bool  # False when identical content under the same name was stored before


def client_basename(filename: str | None) -> str:
    """The last component of a client-sent name, whatever separator the client's OS uses."""
    return PurePosixPath((filename or "").replace("\\", "/")).name


def upload_suffix(filename: str | None) -> str:
    """The supported, lower-cased suffix of a client file name; 415 otherwise."""
    suffix = PurePosixPath(client_basename(filename)).suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        supported = ", ".join(sorted(SUPPORTED_SUFFIXES))
        kind = suffix or "(no extension)"
        raise HTTPException(415, f"unsupported file type {kind!r} for {filename!r}; send one of {supported}")
    return suffix


def safe_stem(filename: str | None) -> str:
    stem = PurePosixPath(client_basename(filename)).stem
    return _UNSAFE.sub("-", stem).strip(".-")[:_MAX_STEM] or "upload"


def store(source: BinaryIO, filename: str | None, folder: Path, budget: int) -> StoredUpload:
    """Copy one upload into ``folder``; 413 past ``budget`` bytes. It is written to a hidden temp file
    first and renamed, so a half-written upload is never visible under its final name."""
    suffix = upload_suffix(filename)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".upload-{uuid.uuid4().hex}.part"
    digest, size = hashlib.sha256(), 0
    try:
        with tmp.open("wb") as out:
            while block := source.read(_COPY_CHUNK):
                size += len(block)
                if size > budget:
                    raise HTTPException(413, f"uploaded files are over the {budget:,}-byte limit")
                digest.update(block)
                out.write(block)
        final = folder / f"{digest.hexdigest()[:16]}-{safe_stem(filename)}{suffix}"
        created = not final.exists()
        if created:
            os.replace(tmp, final)
        else:
            tmp.unlink()  # the same content under the same name: already stored
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return StoredUpload(client_basename(filename), final, size, created)


def remove_orphans(folder: Path, database: Database, write_lock: WriteLock) -> None:
    """Delete files in ``folder`` that no document names. When the database cannot say which files it
    knows, nothing is deleted: the next start tries again."""
    if not folder.is_dir():
        return
    try:
        with write_lock.held():
            with database.sessions() as s:
                known = set(documents_under(s, folder))
            orphans = [p for p in folder.iterdir() if p.is_file() and str(p) not in known]
            for path in orphans:
                path.unlink(missing_ok=True)
    except (SQLAlchemyError, OSError, ReadOnly) as exc:
        logger.warning("could not clear leftover uploads in %s: %s", folder, exc)
        return
    if orphans:
        logger.info("removed %d leftover uploads with no document from %s", len(orphans), folder)


def _upload_status(path: str, failed: set[str], duplicates: dict[str, int]) -> UploadStatus:
    if path in duplicates:
        return "duplicate"
    return "failed" if path in failed else "ok"


class Uploads:
    def __init__(self, rag: Rag, executors: Executors, database: Database, write_lock: WriteLock) -> None:
        self.rag = rag
        self.settings = rag.settings
        self.executors = executors
        self.database = database
        self.write_lock = write_lock

    async def upload(self, files: list[UploadFile]) -> IngestSummaryOut:
        for f in files:
            upload_suffix(f.filename)  # refuse the request before anything is written or queued
        return await self.executors.on_writer_thread(self._upload, files)

    async def delete(self, document_id: int) -> None:
        await self.executors.on_writer_thread(self._delete, document_id)

    def _delete(self, document_id: int) -> None:
        if not self.rag.delete_document(document_id):
            raise HTTPException(404, f"no document with id {document_id}")

    def _upload(self, files: list[UploadFile]) -> IngestSummaryOut:
        """Store the files, then sync them in through ``Rag.ingest``, as `rag ingest FILE...` would."""
        with self.write_lock.held():
            stored = self._store(files)
            try:
                return self._ingest(stored)
            except BaseException:
                remove_orphans(self.settings.uploads_dir, self.database, self.write_lock)
                raise

    def _store(self, files: list[UploadFile]) -> list[StoredUpload]:
        stored: list[StoredUpload] = []
        budget = self.settings.max_upload_bytes
        try:
            for f in files:
                item = store(f.file, f.filename, self.settings.uploads_dir, budget)
                budget -= item.size
                stored.append(item)
        except BaseException:
            for item in stored:
                if item.created:
                    item.path.unlink(missing_ok=True)
            raise
        return stored

    def _ingest(self, stored: list[StoredUpload]) -> IngestSummaryOut:
        """A duplicate (same content as a document under another name) gets no row, so its stored
        file is removed here rather than left for ``remove_orphans``."""
        paths = list(dict.fromkeys(item.path for item in stored))
        summary = self.rag.ingest(paths)
        failed = {f.path for f in summary.failed}
        duplicates = {d.path: d.document_id for d in summary.duplicates}
        with self.database.sessions() as s:
            ids = {path: doc.id for p in paths for path, doc in documents_under(s, p).items()}
        for path in paths:
            if str(path) in duplicates:
                path.unlink(missing_ok=True)
        uploaded = [
            UploadedOut(
                filename=item.filename,
                path=str(item.path),
                document_id=duplicates.get(str(item.path), ids.get(str(item.path))),
                status=_upload_status(str(item.path), failed, duplicates),
            )
            for item in stored
        ]
        return IngestSummaryOut(**vars(summary), uploaded=uploaded)
