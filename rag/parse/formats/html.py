"""HTML: visible prose only, with h1–h3 opening sections."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from rag.parse.formats.common import Builder, Parsed, decode, one_line
from rag.types import Section

if TYPE_CHECKING:
    from bs4 import Tag

_HTML_DROP = ["script", "style", "nav", "header", "footer", "aside", "noscript", "template"]
_HTML_DROP += ["head", "svg", "iframe"]  # <title> is read before <head> goes
_HTML_SECTION_HEADINGS = frozenset({"h1", "h2", "h3"})
_HTML_BLOCKS = frozenset(
    {"address", "article", "blockquote", "body", "caption", "dd", "details", "div", "dl", "dt"}
    | {"fieldset", "figcaption", "figure", "form", "h4", "h5", "h6", "hr", "html", "li", "main"}
    | {"ol", "p", "section", "summary", "table", "tbody", "tfoot", "thead", "ul"}
)
_WHITESPACE = re.compile(r"\s+")
_END_OF_BLOCK = object()  # marker on the HTML walk's stack: the block element's text ends here


def parse_html(data: bytes) -> Parsed:
    """Visible prose only. Page furniture is dropped, except a <header>/<footer> inside <article> or
    <main>, which belongs to the content (it often holds the article's <h1>)."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(decode(data), "lxml")
    title_tag, first_h1 = soup.title, soup.find("h1")
    title = one_line(title_tag.get_text()) if title_tag else ""
    if not title and first_h1:
        title = one_line(first_h1.get_text(" "))
    for tag in soup.find_all(_HTML_DROP):
        if tag.decomposed or (tag.name in ("header", "footer") and tag.find_parent(("article", "main"))):
            continue
        tag.decompose()
    extractor = _HtmlText()
    extractor.walk(soup)
    text, sections = extractor.finish()
    return text, title or None, sections


class _HtmlText:
    """Walks the tree: inline text gathers into a paragraph, block elements end it, h1–h3 open sections,
    <br> and table rows break lines, <pre> keeps its layout."""

    def __init__(self) -> None:
        self._builder = Builder()
        self._inline: list[str] = []

    def walk(self, root: Tag) -> None:
        """Depth-first with an explicit stack: a page nested thousands of tags deep (generated or
        hostile) would exhaust Python's recursion limit."""
        from bs4 import NavigableString, Tag
        from bs4.element import PreformattedString

        stack: list[Any] = list(reversed(root.contents))
        while stack:
            node = stack.pop()
            if node is _END_OF_BLOCK:
                self._flush()
            elif isinstance(node, Tag):
                self._element(node, stack)
            elif isinstance(node, NavigableString) and not isinstance(node, PreformattedString):
                self._inline.append(_WHITESPACE.sub(" ", node))  # comments/doctype are Preformatted

    def _element(self, tag: Tag, stack: list[Any]) -> None:
        """Handle ``tag``; the children still to walk are pushed on ``stack`` (last pushed, first)."""
        name = tag.name
        if name == "br":
            self._inline.append("\n")
        elif name == "tr":
            cells = (one_line(cell.get_text(" ")) for cell in tag.find_all(("td", "th"), recursive=False))
            self._inline.append("\n" + " | ".join(c for c in cells if c) + "\n")
        elif name == "pre":
            self._flush()
            self._builder.add(tag.get_text())
        elif name in _HTML_SECTION_HEADINGS:
            self._flush()
            heading = one_line(tag.get_text(" "))
            if heading:
                self._builder.section(heading=heading)
                self._builder.add(heading)
        elif name in _HTML_BLOCKS:
            self._flush()
            stack.append(_END_OF_BLOCK)
            stack.extend(reversed(tag.contents))
        else:
            stack.extend(reversed(tag.contents))

    def _flush(self) -> None:
        lines = (one_line(line) for line in "".join(self._inline).split("\n"))
        self._builder.add("\n".join(line for line in lines if line))
        self._inline.clear()

    def finish(self) -> tuple[str, list[Section]]:
        self._flush()
        return self._builder.build()
