"""Zip containers (DOCX, PPTX, XLSX, ODF, EPUB): checked against the caps before any library inflates
them, so a compression bomb fails as a `LoadError` that says so instead of exhausting the parser's
memory. The caps are on what the zip's directory declares; Python's zipfile never inflates a member past
its declared size (and the worker's address-space cap stands behind libraries that read zips their own
way), so a member cannot lie its way past them."""

from __future__ import annotations

import io
import zipfile

from rag.parse.formats.common import malformed
from rag.types import LoadError

# All parts of one file together, inflated. A 50 MB (max_file_bytes) spreadsheet of plain numbers unzips
# to about 400 MB of XML; text past max_file_chars (2 M characters) fails later anyway.
MAX_UNZIPPED_BYTES = 512 << 20
MAX_MEMBERS = 20_000  # an EPUB of a long book has a few hundred; each costs a directory entry in memory
MAX_MEMBER_BYTES = 256 << 20  # one part read whole into Python (an EPUB chapter, an ODF content.xml)


def open_zip(data: bytes, kind: str) -> zipfile.ZipFile:
    """The zip inside ``data`` once its directory is within the caps; `LoadError` saying which cap
    it broke (or that it is no zip) otherwise."""
    with malformed(kind):
        archive = zipfile.ZipFile(io.BytesIO(data))
    infos = archive.infolist()
    if len(infos) > MAX_MEMBERS:
        raise LoadError(f"{kind} file has {len(infos):,} parts, over the {MAX_MEMBERS:,}-part limit")
    total = sum(info.file_size for info in infos)
    if total > MAX_UNZIPPED_BYTES:
        raise LoadError(
            f"{kind} file unzips to {total:,} bytes, over the {MAX_UNZIPPED_BYTES:,}-byte limit: "
            "it may be a compression bomb"
        )
    return archive


def check_zip(data: bytes, kind: str) -> None:
    """Raise `LoadError` unless ``data`` is a zip within the caps (before a library opens it)."""
    open_zip(data, kind).close()


def read_member(archive: zipfile.ZipFile, name: str, kind: str) -> bytes:
    """One part, whole; a part over `MAX_MEMBER_BYTES` or missing is a `LoadError`."""
    try:
        info = archive.getinfo(name)
    except KeyError as e:
        raise LoadError(f"damaged {kind} file: it has no {name!r}") from e
    if info.file_size > MAX_MEMBER_BYTES:
        raise LoadError(
            f"{kind} part {name!r} unzips to {info.file_size:,} bytes, over the "
            f"{MAX_MEMBER_BYTES:,}-byte limit for one part: it may be a compression bomb"
        )
    with malformed(kind):
        return archive.read(info)
