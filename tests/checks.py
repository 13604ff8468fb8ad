"""Contracts between the pipeline's stages that tests of more than one stage check."""

from __future__ import annotations

from rag.types import LoadedDocument


def check_sections(doc: LoadedDocument) -> None:
    """The contract chunking relies on: sorted, disjoint, in bounds, each span its own trimmed text."""
    previous_end = 0
    for s in doc.sections:
        assert previous_end <= s.start < s.end <= len(doc.text), s
        span = doc.text[s.start : s.end]
        assert span == span.strip(), f"section {s} has surrounding whitespace"
        previous_end = s.end


def section_texts(doc: LoadedDocument) -> list[str]:
    """Each section's text, in order."""
    return [doc.text[s.start : s.end] for s in doc.sections]
