"""Uploaded files onto disk, under names the service makes up.

Nothing of the client's file name is trusted as a path: only its last component's stem, reduced to
``[A-Za-z0-9._-]``, is kept so `rag docs list` stays readable, and its suffix when a loader supports
it. The name leads with the content's sha256, so uploading the same file again maps to the same path
and the ingest sync reports it unchanged instead of storing a duplicate. The same content under another
name maps to another path: the ingest reports it as a duplicate of the existing document, and the
service removes the stored file.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from fastapi import HTTPException

from rag.parse.formats import SUPPORTED_SUFFIXES

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
