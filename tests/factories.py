"""Hand-built data that several test modules share: sources for the generator (three short topics,
one answer in each). No model is loaded here."""

from __future__ import annotations

from rag.types import Source

TOPICS = {
    "Volcanoes": (
        "Mount Etna is an active volcano on the east coast of Sicily, Italy. It is the tallest active "
        "volcano in Europe, about 3,357 metres high."
    ),
    "Coffee": (
        "Coffee was first cultivated in Yemen in the 15th century. Today Brazil is the largest producer "
        "of coffee in the world."
    ),
    "Chess": (
        "The Sicilian Defence is a chess opening that begins with 1.e4 c5. It is the most popular "
        "response to White's first move 1.e4."
    ),
}


def make_sources(topics: dict[str, str] = TOPICS) -> list[Source]:
    """The topics as ranked sources: chunk ids 10, 20, 30, each chunk its whole text."""
    return [
        Source(
            rank=i + 1,
            chunk_id=10 * (i + 1),
            document_id=i + 1,
            path=f"docs/{title.lower()}.txt",
            title=title,
            text=text,
            char_start=0,
            char_end=len(text),
            score=0.9 - i / 10,
        )
        for i, (title, text) in enumerate(topics.items())
    ]
