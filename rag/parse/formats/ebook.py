"""EPUB e-books: the chapters in reading order (the OPF spine), each read as HTML is.

Written on zipfile and lxml rather than EbookLib, whose licence (AGPL-3.0) this project cannot take;
what an EPUB needs to be read is two small XML files (container.xml names the package, the package lists
the chapters in order) and the chapters themselves."""

from __future__ import annotations

import posixpath
import warnings
from urllib.parse import unquote

from rag.parse.formats.common import Builder, Parsed, malformed, one_line
from rag.parse.formats.containers import open_zip, read_member
from rag.parse.formats.html import parse_html
from rag.types import LoadError

_CONTAINER = "{urn:oasis:names:tc:opendocument:xmlns:container}"
_OPF = "{http://www.idpf.org/2007/opf}"
_DC_TITLE = "{http://purl.org/dc/elements/1.1/}title"
_CHAPTER_TYPES = frozenset({"application/xhtml+xml", "text/html", "application/x-dtbook+xml"})


def parse_epub(data: bytes) -> Parsed:
    """Chapters in spine order (the EPUB 3 navigation page left out); each chapter's h1–h3 open
    sections, as in HTML. DRM-encrypted books (META-INF/encryption.xml over the chapters) are refused."""
    from lxml import etree

    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    builder = Builder()
    with open_zip(data, "EPUB") as archive:
        names = set(archive.namelist())
        with malformed("EPUB"):
            container = etree.fromstring(read_member(archive, "META-INF/container.xml", "EPUB"), parser)
            rootfile = container.find(f".//{_CONTAINER}rootfile")
            if rootfile is None or not rootfile.get("full-path"):
                raise LoadError("damaged EPUB file: its container.xml names no package")
            opf_path = rootfile.get("full-path", "")
            package = etree.fromstring(read_member(archive, opf_path, "EPUB"), parser)
        title_element = package.find(f".//{_DC_TITLE}")
        title = one_line(title_element.text or "") if title_element is not None else ""
        manifest = {
            item.get("id"): item
            for item in package.iter(f"{_OPF}item")
            if item.get("media-type") in _CHAPTER_TYPES
            and "nav" not in (item.get("properties") or "").split()
        }
        encrypted = "META-INF/encryption.xml" in names
        for ref in package.iter(f"{_OPF}itemref"):
            item = manifest.get(ref.get("idref"))
            if item is None:
                continue
            path = posixpath.normpath(
                posixpath.join(posixpath.dirname(opf_path), unquote(item.get("href", "")))
            )
            if path not in names:
                continue
            chapter = read_member(archive, path, "EPUB")
            if encrypted and not chapter.lstrip().startswith(b"<"):
                raise LoadError("DRM-protected EPUB: its chapters are encrypted")
            try:
                with warnings.catch_warnings():  # XHTML read as HTML (as browsers read it): bs4 warns
                    warnings.simplefilter("ignore")
                    text, _, sections = parse_html(chapter)
            except LoadError:
                continue  # a chapter that is not text (a stray binary): the rest of the book still reads
            builder.extend(text, sections)
    text, sections = builder.build()
    return text, title or None, sections
