#!/usr/bin/env python3
"""Render the attribution report of an Answer and screenshot it with headless Chromium.

    python scripts/screenshot_report.py demo /tmp/report.png
    python scripts/screenshot_report.py demo /tmp/report-s3.png --focus 3      # sentence 3 selected
    python scripts/screenshot_report.py answer.json /tmp/a.png --width 420 --dark
    python scripts/screenshot_report.py demo /tmp/r.png --html /tmp/r.html     # keep the page too

SOURCE is ``demo`` (a built-in Answer with three sources, three sentences, one flagged, each sentence with
its evidence spans and a 30 × 9 per-head lookback grid), ``demo-quotes`` (the same answer held back for its
risk and replaced by verbatim quotes), ``demo-abstained`` (held back with nothing to quote) or a file with an
Answer as JSON (what ``rag ask --json`` / ``rag report ID --json`` print). ``--focus N`` opens the page at
``#focus=N``, which the page honours by pre-selecting sentence N, as hovering it would. Needs
``chromium`` (Debian: ``apt-get install -y chromium``) or a path in ``$CHROMIUM``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rag.report.html import render_html
from rag.types import Answer, Evidence, Hallucination, SentenceAttribution, Source, Timings

_LEAVE = (
    "Annual leave\n\n"
    "Every employee on a permanent contract is entitled to 25 days of paid annual leave per calendar "
    "year, in addition to public holidays. Employees who join during the year receive a pro-rated "
    "allowance for their first year, rounded up to the nearest half day.\n\n"
    "Carry-over. Up to 5 unused days may be carried over into the next calendar year. Days beyond "
    "that are forfeited on 31 December unless your manager approved an exception in writing, for "
    "example because a project made it impossible to take leave.\n\n"
    "Requesting leave. Submit requests in the HR portal at least two weeks ahead for absences longer "
    "than three days. Your manager answers within five working days; requests not answered in time "
    "count as approved."
)
_FAQ = (
    "Q: Do carried-over days expire?\n"
    "A: Carried-over days are added to your new allowance on 1 January and are used first. They do "
    "not expire separately, but the 5-day carry-over limit applies again at the end of the year.\n"
    "Q: Can I sell unused leave?\nA: No. Unused leave is not paid out, except when you leave the company."
)
_ONBOARDING = (
    "Your first week: collect your laptop from IT on day one, finish the security training by "
    "Friday, and book a 30-minute intro with each member of your team. Questions about pay and "
    "leave go to people@example.org."
)


def _source(
    rank: int,
    chunk_id: int,
    path: str,
    title: str,
    text: str,
    score: float,
    mass: float,
    page: int | None = None,
    heading: str | None = None,
) -> Source:
    return Source(
        rank=rank,
        chunk_id=chunk_id,
        document_id=chunk_id // 10,
        path=path,
        title=title,
        text=text,
        char_start=0,
        char_end=len(text),
        score=score,
        attention_mass=mass,
        doc_type=path.rsplit(".", 1)[-1],
        page=page,
        heading=heading,
    )


def _evidence(source: Source, text: str, mass: float) -> Evidence:
    at = source.char_start + source.text.index(text)
    return Evidence(source.chunk_id, source.document_id, source.path, at, at + len(text), text, mass)


def _heads(grounded: float, layers: int = 30, heads: int = 9) -> list[list[float]]:
    """A plausible (layers × heads) lookback grid: most heads near even, a few mid-layer heads that
    look back at the sources (more of them the better grounded the sentence), a few that look at the
    answer itself."""
    grid = []
    for layer in range(layers):
        row = []
        for h in range(heads):
            wobble = 0.08 * math.sin(1.7 * layer + 2.3 * h) + 0.05 * math.cos(0.9 * layer * h)
            retrieval = grounded * math.exp(-(((layer - 14 - h % 3) / 4.0) ** 2)) * (h in (1, 4, 6))
            local = 0.3 * (layer > 22 and h in (2, 7))
            row.append(round(min(max(0.5 + wobble + 0.4 * retrieval - local, 0.02), 0.97), 2))
        grid.append(row)
    return grid


def _sources() -> list[Source]:
    """The demo's three chunks; the leave policy chunk starts 1,840 characters into its document."""
    leave, faq, onboarding = [
        _source(
            1,
            101,
            "handbook/policies/leave-policy.md",
            "Leave policy",
            _LEAVE,
            0.812,
            0.57,
            heading="Annual leave",
        ),
        _source(2, 205, "hr/faq/benefits-faq-2025.pdf", "Benefits FAQ 2025", _FAQ, 0.744, 0.29, page=4),
        _source(
            3,
            311,
            "engineering/onboarding.md",
            "Onboarding checklist",
            _ONBOARDING,
            0.391,
            0.14,
            heading="Your first week",
        ),
    ]
    leave.char_start, leave.char_end = 1840, 1840 + len(leave.text)
    return [leave, faq, onboarding]


def demo_answer() -> Answer:
    """A realistic Answer: three sources, three sentences, the last one made up and flagged."""
    text = (
        "New employees get 25 days of paid annual leave per year, pro-rated in their first year [1]. "
        "Up to 5 unused days can be carried over into the next calendar year [1][2]. "
        "Carried-over days expire if they are not used by 31 March [3]."
    )
    cuts = [0, text.index("Up to"), text.index("Carried-over"), len(text)]
    rows = [
        ({101: 0.78, 205: 0.17, 311: 0.05}, 0.71, 0.08, False),
        ({101: 0.52, 205: 0.41, 311: 0.07}, 0.64, 0.19, False),
        ({101: 0.21, 205: 0.14, 311: 0.65}, 0.22, 0.83, True),
    ]
    sentences = []
    for (start, end), (support, lookback, risk, flagged) in zip(itertools.pairwise(cuts), rows, strict=True):
        body = text[start:end].rstrip()
        sentences.append(
            SentenceAttribution(body, start, start + len(body), support, lookback, risk, flagged)
        )
    leave, faq, onboarding = _sources()
    evidence = [
        [
            _evidence(leave, "Every employee on a permanent contract is entitled to 25 days of paid annual "
                      "leave per calendar year, in addition to public holidays.", 0.58),
            _evidence(leave, "Employees who join during the year receive a pro-rated allowance for their "
                      "first year, rounded up to the nearest half day.", 0.24),
        ],
        [
            _evidence(leave, "Up to 5 unused days may be carried over into the next calendar year.", 0.46),
            _evidence(faq, "A: Carried-over days are added to your new allowance on 1 January and are used "
                      "first.", 0.27),
        ],
        [_evidence(faq, "They do not expire separately, but the 5-day carry-over limit applies again at the "
                   "end of the year.", 0.31)],
    ]  # fmt: skip
    for sentence, spans, grounded in zip(sentences, evidence, (1.0, 0.8, 0.15), strict=True):
        sentence.evidence, sentence.heads = spans, _heads(grounded)
    return Answer(
        id="3f9c2b7e41d04a6f9f0e2c8d5a1b7e60",
        question="How many vacation days do new employees get, and can unused days be carried over?",
        answer=text,
        created_at="2025-03-14T09:26:53.512000+00:00",
        model={"generator": "SmolLM2-135M-Instruct (Q4_1 → fp32)", "embedder": "all-MiniLM-L6-v2"},
        sources=[leave, faq, onboarding],
        sentences=sentences,
        hallucination=Hallucination(
            risk=0.83, flagged=True, method="lookback-lens (logistic, 30 layers)", threshold=0.5
        ),
        timings=Timings(
            retrieve_ms=14.2, prefill_ms=151.0, decode_ms=4870.5, attribute_ms=38.9, total_ms=5081.3
        ),
        attention_sink=0.41,
    )


def demo_quotes() -> Answer:
    """The demo answer held back for its risk; the user gets the draft's evidence verbatim instead."""
    answer = demo_answer()
    quotes = [answer.sentences[0].evidence[0], answer.sentences[1].evidence[0]]
    chunk_ids = [s.chunk_id for s in answer.sources]
    cited = " ".join(f"“{q.text}” [{chunk_ids.index(q.chunk_id) + 1}]" for q in quotes)
    answer.abstained, answer.answer_kind = True, "quotes"
    answer.draft, answer.sentences = answer.answer, []
    answer.answer = f"I could not verify a generated answer. Your documents say: {cited}"
    return answer


def demo_abstained() -> Answer:
    """The demo answer held back with nothing to quote: the page shows the abstention and the draft."""
    answer = demo_answer()
    answer.abstained, answer.answer_kind = True, "refusal"
    answer.draft, answer.sentences = answer.answer, []
    answer.answer = (
        "I can't give a reliable answer from your documents: the draft answer did not draw on the "
        "retrieved sources, so it was held back."
    )
    return answer


DEMOS = {"demo": demo_answer, "demo-quotes": demo_quotes, "demo-abstained": demo_abstained}


def find_chromium() -> str:
    """The Chromium binary: $CHROMIUM, else the first of the usual names on PATH."""
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and (path := shutil.which(name)):
            return path
    raise SystemExit("no chromium found: apt-get update && apt-get install -y chromium (or set $CHROMIUM)")


def screenshot(
    page: Path, out: Path, width: int, height: int, fragment: str = "", dark: bool = False
) -> None:
    """Screenshot a local HTML file with headless Chromium (no network, throwaway profile)."""
    with tempfile.TemporaryDirectory(prefix="sightline-chromium-") as profile:
        cmd = [
            find_chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--screenshot={out}",
            f"--window-size={width},{height}",
            "--virtual-time-budget=2000",
        ]
        if dark:
            cmd += ["--force-dark-mode", "--blink-settings=preferredColorScheme=0"]
        cmd.append(page.resolve().as_uri() + fragment)
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if result.returncode != 0 or not out.exists():
            raise SystemExit(f"chromium failed ({result.returncode}):\n{result.stderr[-2000:]}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source", help=f"an Answer JSON file, or one of: {', '.join(DEMOS)}")
    parser.add_argument("out", type=Path, help="the PNG to write")
    parser.add_argument("--focus", type=int, help="pre-select sentence N (1-based) via #focus=N")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1600)
    parser.add_argument("--dark", action="store_true", help="emulate prefers-color-scheme: dark")
    parser.add_argument("--html", type=Path, help="also keep the rendered page here")
    args = parser.parse_args(argv)

    if args.source in DEMOS:
        answer = DEMOS[args.source]()
    else:
        answer = Answer.from_dict(json.loads(Path(args.source).read_text(encoding="utf-8")))
    page_html = render_html(answer)
    args.out = args.out.resolve()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sightline-report-") as tmp:
        page = Path(args.html) if args.html else Path(tmp) / "report.html"
        page.write_text(page_html, encoding="utf-8")
        fragment = f"#focus={args.focus}" if args.focus else ""
        screenshot(page, args.out, args.width, args.height, fragment, args.dark)
    print(args.out)


if __name__ == "__main__":
    main()
