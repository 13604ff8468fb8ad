"""Hand-built data that several test modules share: sources for the generator (three short topics,
one answer in each), an Answer with its report's every part, and a document only a test has written.
No model is loaded here."""

from __future__ import annotations

from rag.types import Answer, Hallucination, SentenceAttribution, Source, Timings

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


LEAVE = (
    "Annual leave\n\nEvery employee is entitled to 25 days of paid annual leave per calendar year. "
    "Employees who join during the year receive a pro-rated allowance.\n\n"
    "Carry-over. Up to 5 unused days may be carried over into the next calendar year."
)
FAQ = "Q: Can I sell unused leave?\nA: No. Unused leave is not paid out, except when you leave the company."
ONBOARDING = "Your first week: collect your laptop from IT on day one and finish the security training."


def make_answer(question: str = "How many vacation days do new employees get?", **chunk: str) -> Answer:
    """Three sources, three sentences; the third is made up and flagged."""
    texts = {"leave": LEAVE, "faq": FAQ, "onboarding": ONBOARDING, **chunk}
    text = (
        "New employees get 25 days of paid annual leave per year [1]. "
        "Up to 5 unused days can be carried over [1, 2]. "
        "Unused days are paid out every March [3]."
    )
    bounds = [
        (0, text.index(" Up")),
        (text.index("Up"), text.index(" Unused")),
        (text.index("Unused"), len(text)),
    ]
    rows = [
        ({101: 0.8, 205: 0.15, 311: 0.05}, 0.72, 0.07, False),
        ({101: 0.55, 205: 0.4, 311: 0.05}, 0.61, 0.31, False),
        ({101: 0.2, 205: 0.2, 311: 0.6}, 0.18, 0.86, True),
    ]
    sentences = [
        SentenceAttribution(text[s:e], s, e, support, lookback, risk, flagged)
        for (s, e), (support, lookback, risk, flagged) in zip(bounds, rows, strict=True)
    ]

    def source(
        rank: int, chunk_id: int, path: str, title: str, body: str, score: float, mass: float
    ) -> Source:
        return Source(rank, chunk_id, chunk_id // 10, path, title, body, 0, len(body), score, mass, "md")

    return Answer(
        id="a1b2c3",
        question=question,
        answer=text,
        created_at="2025-03-14T09:26:53+00:00",
        model={"generator": "SmolLM2-135M-Instruct", "embedder": "all-MiniLM-L6-v2", "decoding": "greedy"},
        sources=[
            # out of rank order on purpose: cards (and [n]) follow rank
            source(2, 205, "hr/faq/benefits-faq.pdf", "Benefits FAQ", texts["faq"], 0.74, 0.29),
            source(1, 101, "handbook/leave-policy.md", "Leave policy", texts["leave"], 0.81, 0.57),
            source(3, 311, "eng/onboarding.md", "Onboarding", texts["onboarding"], 0.39, 0.14),
        ],
        sentences=sentences,
        hallucination=Hallucination(risk=0.86, flagged=True, method="lookback-lens", threshold=0.5),
        timings=Timings(
            retrieve_ms=14.2, prefill_ms=151.0, decode_ms=4870.5, attribute_ms=38.9, total_ms=5081.3
        ),
        attention_sink=0.41,
    )


# A document no model has seen: a question only it can answer shows the generator read the file.
MADE_UP = (
    "# The Varnholm light\n\nThe Varnholm light stands on a granite skerry at the mouth of the Varn fjord. "
    "It was first lit in 1898 with a paraffin lamp and a fourth-order lens, and automated in 1962.\n\n"
    "The keeper of the Varnholm light from 1911 to 1934 was Elin Sandqvist. She took over from her "
    "father, kept a logbook of every ship that passed, and rowed out twice to fishing boats caught by "
    "winter storms. She also kept a tame gull named Captain.\n"
)
