"""The HTML attribution report: structure, escaping, self-containment, the script's data, evidence
highlighted on exactly its text, the per-head heatmap, the answer kind, and (where Chromium is installed;
under CI, ``CI=true``, it must be) that the page's script really runs, hovering and focusing a sentence
lights its evidence, and the screenshot script works. All fixtures are hand-built Answers: no model."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import lxml.html
import pytest

from rag.report.html import render_html
from rag.report.view import format_ms, format_share, risk_hue, risk_level
from rag.types import Answer, Evidence, HeldBack, Source
from tests.factories import LEAVE, make_answer

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = next(
    (p for n in ("chromium", "chromium-browser", "google-chrome") if (p := shutil.which(n))), None
)


def _missing(reason: str) -> None:
    """Skip, except under CI, where a missing browser fails the run instead of hiding the check."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}: CI needs it (.ci/run installs chromium with apt)")
    pytest.skip(reason)


@pytest.fixture
def chromium() -> str:
    if CHROMIUM is None:
        _missing("no chromium on PATH (apt-get install chromium)")
    assert CHROMIUM is not None
    return CHROMIUM

LEAVE_AT, FAQ_AT = 1200, 40  # where the chunks start in their documents (evidence has document offsets)
LAYERS, HEADS = 4, 3


def head_grid(seed: int) -> list[list[float]]:
    """A (LAYERS, HEADS) lookback grid with distinct values: one strong head, one that looks at the answer."""
    grid = [[round(0.38 + 0.04 * ((seed + 3 * i + h) % 7), 2) for h in range(HEADS)] for i in range(LAYERS)]
    grid[2][1], grid[0][2] = 0.97, 0.08
    return grid


def evidence(src: Source, text: str, mass: float) -> Evidence:
    at = src.text.index(text)
    start = src.char_start + at
    return Evidence(src.chunk_id, src.document_id, src.path, start, start + len(text), text, mass)


def make_evidence_answer() -> Answer:
    """make_answer with what the decoding pass now stores: evidence per sentence and a head grid.

    S1 draws on two leave sentences; S2 on the carry-over line and on part of S1's first span (so
    the marks overlap); S3 cites [3] but drew on the FAQ."""
    answer = make_answer()
    faq, leave, _ = answer.sources
    leave.char_start, leave.char_end = LEAVE_AT, LEAVE_AT + len(leave.text)
    faq.char_start, faq.char_end = FAQ_AT, FAQ_AT + len(faq.text)
    s1, s2, s3 = answer.sentences
    first = "Every employee is entitled to 25 days of paid annual leave per calendar year."
    s1.evidence = [
        evidence(leave, first, 0.62),
        evidence(leave, "Employees who join during the year receive a pro-rated allowance.", 0.21),
    ]
    s2.evidence = [
        evidence(leave, "Up to 5 unused days may be carried over into the next calendar year.", 0.48),
        evidence(leave, "25 days of paid annual leave", 0.2),
    ]
    s3.evidence = [
        evidence(faq, "No. Unused leave is not paid out, except when you leave the company.", 0.55)
    ]
    for k, s in enumerate(answer.sentences):
        s.heads = head_grid(k)
    return answer


def mark_coverage(chunk: lxml.html.HtmlElement, tag: str = "ev") -> tuple[str, dict[int, set[int]]]:
    """The chunk's text, and per sentence the char positions inside <mark class=tag> naming it."""
    text, cover = chunk.text or "", {}
    for child in chunk:
        piece = child.text_content()
        if child.tag == "mark" and tag in classes(child):
            for i in map(int, child.get("data-s").split()):
                cover.setdefault(i, set()).update(range(len(text), len(text) + len(piece)))
        text += piece + (child.tail or "")
    return text, cover


def cls(name: str) -> str:
    """XPath predicate: the element has class ``name``."""
    return f"contains(concat(' ', normalize-space(@class), ' '), ' {name} ')"


def tree(page: str) -> lxml.html.HtmlElement:
    return lxml.html.document_fromstring(page)


def classes(el: lxml.html.HtmlElement) -> set[str]:
    return set((el.get("class") or "").split())


def report_data(page: str) -> dict:
    (node,) = tree(page).xpath('//script[@id="report-data"]')
    assert node.get("type") == "application/json"
    return json.loads(node.text)


class _Balance(HTMLParser):
    """Fails on a closing tag that does not match the open one (void elements aside)."""

    VOID = frozenset(
        ["area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"]
    )

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1:]}>"
        self.stack.pop()


def test_page_parses_with_balanced_tags() -> None:
    page = render_html(make_answer())
    assert page.startswith("<!doctype html>")
    checker = _Balance()
    checker.feed(page)
    checker.close()
    assert checker.stack == []
    doc = tree(page)
    assert doc.find(".//title") is not None and doc.xpath("//meta[@name='viewport']")
    assert "prefers-color-scheme: dark" in page and "@media (max-width" in page


def test_header_shows_question_models_time_timings_and_risk_badge() -> None:
    doc = tree(render_html(make_answer()))
    assert doc.xpath("string(//h1)") == "How many vacation days do new employees get?"
    meta = doc.xpath("string(//dl[@class='meta'])")
    assert (
        "SmolLM2-135M-Instruct" in meta and "all-MiniLM-L6-v2" in meta and "2025-03-14 09:26:53 UTC" in meta
    )
    timings = doc.xpath("string(//div[@class='timings'])")
    for part in ("retrieve 14 ms", "prefill 151 ms", "decode 4.87 s", "attribute 39 ms", "total 5.08 s"):
        assert part in " ".join(timings.split())
    (badge,) = doc.xpath(f"//div[{cls('badge')}]")
    assert "risk-high" in classes(badge)
    text = " ".join(badge.text_content().split())
    assert "0.86" in text and "Flagged" in text and "threshold 0.50" in text and "lookback-lens" in text
    assert "1 of 3 sentences flagged" in text
    assert not doc.xpath("//div[@class='notice']")  # not abstained
    footer = " ".join(doc.xpath("string(//footer)").split())
    assert "Attention sink: 41%" in footer and "first token" in footer


def test_the_header_says_how_the_answer_was_decoded_and_older_answers_were_greedy() -> None:
    answer = make_answer()
    answer.model["decoding"] = "guided"
    (dd,) = tree(render_html(answer)).xpath("//dl[@class='meta']//dt[text()='decoding']/../dd")
    assert dd.text == "guided"
    report = answer.to_dict()
    del report["model"]["decoding"]  # stored before answers said how they were decoded
    assert Answer.from_report(report).model["decoding"] == "greedy"


def test_each_sentence_is_tinted_with_its_risk_class() -> None:
    answer = make_answer()
    doc = tree(render_html(answer))
    spans = doc.xpath(f"//p[@class='answer']//span[{cls('sent')}]")
    assert len(spans) == 3
    expected = ["risk-low", "risk-mid", "risk-high"]
    for span, sentence, level in zip(spans, answer.sentences, expected, strict=True):
        assert level in classes(span)
        assert sentence.text.split(" [")[0] in span.text_content()
        assert float(span.get("data-risk")) == pytest.approx(sentence.risk, abs=1e-3)
        assert span.get("tabindex") == "0"  # keyboard reachable
        assert re.fullmatch(r"--h:\d+", span.get("style"))
    flagged = spans[2]
    assert "flagged" in classes(flagged) and flagged.xpath(".//span[@class='flag']")
    assert "risk 0.86" in flagged.get("title") and "lookback 0.18" in flagged.get("title")
    assert not spans[0].xpath(".//span[@class='flag']")
    # whitespace between sentences survives; the text reads as the answer does
    assert " ".join(doc.xpath("string(//p[@class='answer'])").split()).startswith("New employees get 25 days")


def test_citations_link_to_source_cards_in_rank_order() -> None:
    answer = make_answer()
    answer.answer += " See also [7]."  # text after the last sentence, citing a source never retrieved
    doc = tree(render_html(answer))
    cards = doc.xpath(f"//article[{cls('card')}]")
    assert [c.get("id") for c in cards] == ["src-1", "src-2", "src-3"]
    assert [c.xpath("string(.//div[@class='fname'])") for c in cards] == [
        "leave-policy.md",
        "benefits-faq.pdf",
        "onboarding.md",
    ]
    hrefs = [a.get("href") for a in doc.xpath("//p[@class='answer']//a[@class='cite']")]
    assert hrefs == ["#src-1", "#src-1", "#src-2", "#src-3"]
    assert "See also" in doc.xpath("string(//p[@class='answer'])")
    assert all(doc.xpath(f"//*[@id='{h[1:]}']") for h in hrefs)
    missing = doc.xpath(f"//span[{cls('cite')} and {cls('missing')}]")
    assert [m.text for m in missing] == ["7"]


def test_each_source_shows_share_as_percentage_path_score_and_text() -> None:
    doc = tree(render_html(make_answer()))
    cards = doc.xpath(f"//article[{cls('card')}]")
    assert [c.xpath("string(.//span[@class='att-v'])") for c in cards] == ["57%", "29%", "14%"]
    assert [c.xpath(".//i[@class='fill']/@style")[0] for c in cards] == [
        "width:57.0%",
        "width:29.0%",
        "width:14.0%",
    ]
    first = cards[0]
    assert first.xpath("string(.//div[@class='dir'])") == "handbook/"
    assert first.xpath("string(.//div[@class='title'])") == "Leave policy"
    assert "0.810" in first.xpath("string(.//div[@class='score'])")
    assert "Every employee is entitled" in first.xpath(f"string(.//div[{cls('chunk')}])")
    # sentences 1 and 2 cite source 1; sentence 3 cites source 3 but shares no words with it
    assert [b.text for b in first.xpath(f".//button[{cls('sref')}]")] == ["S1", "S2"]
    (nomatch,) = cards[2].xpath(f".//button[{cls('sref')}]")
    assert "nomatch" in classes(nomatch)


def test_a_source_changed_or_gone_since_the_answer_says_so_and_keeps_the_text_it_saw() -> None:
    answer = make_answer()
    by_rank = sorted(answer.sources, key=lambda s: s.rank)
    by_rank[0].stale, by_rank[2].stale = "changed", "gone"
    cards = tree(render_html(answer)).xpath(f"//article[{cls('card')}]")
    notes = [c.xpath(f"string(.//p[{cls('stale')}])") for c in cards]
    assert notes[0].startswith("Changed since this answer.") and "Chunk 101 now holds other text" in notes[0]
    assert notes[1] == ""
    assert notes[2].startswith("Gone since this answer.") and "Chunk 311 was deleted" in notes[2]
    assert "Every employee is entitled" in cards[0].xpath(f"string(.//div[{cls('chunk')}])")


def test_cited_span_is_marked_for_the_citing_sentence() -> None:
    doc = tree(render_html(make_answer()))
    marks = doc.xpath("//article[@id='src-1']//mark[@class='span']")
    by_sentence = {m.get("data-s"): m.text_content() for m in marks}
    assert by_sentence["0"] == "Every employee is entitled to 25 days of paid annual leave per calendar year."
    assert by_sentence["1"] == "Up to 5 unused days may be carried over into the next calendar year."
    assert not doc.xpath("//article[@id='src-3']//mark")


def test_long_chunks_are_collapsible() -> None:
    answer = make_answer(leave=LEAVE + ("\n\nMore policy text follows here." * 30))
    doc = tree(render_html(answer))
    (chunk,) = doc.xpath(f"//article[@id='src-1']//div[{cls('chunk')}]")
    assert "long" in classes(chunk)
    assert doc.xpath("//article[@id='src-1']//button[@class='more']")
    assert not doc.xpath("//article[@id='src-3']//button[@class='more']")


def test_user_content_is_escaped_everywhere() -> None:
    evil = '<script>alert("x")</script>'
    answer = make_answer(
        question=f"What is {evil}?", leave=f"</script>{evil}<img src=x onerror=alert(2)> leave"
    )
    answer.sources[0].path = 'docs/"><img src=x onerror=alert(3)>.md'
    answer.sources[0].title = evil
    answer.model["generator"] = evil
    answer.hallucination.method = evil
    page = render_html(answer)
    assert (
        evil not in page and "<img" not in page and "onerror=alert" not in page.replace("onerror=alert(", "")
    )
    doc = tree(page)
    scripts = doc.xpath("//script")
    assert [s.get("id") for s in scripts] == ["report-data", None]
    assert scripts[0].get("type") == "application/json"
    assert not doc.xpath("//img") and not doc.xpath("//@onerror") and not doc.xpath("//@onclick")
    assert doc.xpath("string(//h1)") == f"What is {evil}?"  # shown as text, not run
    assert evil in doc.xpath(f"string(//article[@id='src-1']//div[{cls('chunk')}])")
    assert "<img src=x" in doc.xpath("string(//article[@id='src-2']//div[@class='fname'])")
    report_data(page)  # still valid JSON


def test_no_external_resources() -> None:
    page = render_html(make_answer())
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"""(?:src|href|action|srcset)\s*=\s*["']?\s*(?:[a-z]+:)?//""", page, re.I)
    assert "@import" not in page and "url(" not in page
    doc = tree(page)
    assert all(h.startswith("#") for h in doc.xpath("//@href"))
    assert not doc.xpath("//@src") and not doc.xpath("//link") and not doc.xpath("//iframe")


def test_script_is_allowed_by_its_csp_hash() -> None:
    page = render_html(make_answer())
    doc = tree(page)
    (csp,) = doc.xpath("//meta[@http-equiv='Content-Security-Policy']/@content")
    assert "default-src 'none'" in csp
    (code,) = re.findall(r"<script>(.*?)</script>", page, flags=re.S)
    digest = base64.b64encode(hashlib.sha256(code.encode()).digest()).decode()
    assert f"'sha256-{digest}'" in csp


def test_hover_data_is_valid_json_aligned_with_the_cards() -> None:
    answer = make_answer()
    data = report_data(render_html(answer))
    assert [s["chunk_id"] for s in data["sources"]] == [101, 205, 311]
    assert [s["n"] for s in data["sources"]] == [1, 2, 3]
    assert len(data["sentences"]) == 3
    assert data["sentences"][0]["support"] == [0.8, 0.15, 0.05]
    assert data["sentences"][2]["support"] == [0.2, 0.2, 0.6]
    assert [s["cites"] for s in data["sentences"]] == [[1], [1, 2], [3]]
    assert [s["flagged"] for s in data["sentences"]] == [False, False, True]
    for s in data["sentences"]:
        assert sum(s["support"]) == pytest.approx(1.0)


def test_json_data_cannot_close_its_script_tag() -> None:
    answer = make_answer()
    answer.sentences[0].text = "</script><script>alert(1)</script> [1]"
    page = render_html(answer)
    (blob,) = re.findall(r'<script type="application/json" id="report-data">(.*?)</script>', page, re.S)
    assert "<" not in blob and ">" not in blob
    json.loads(blob)


def test_abstained_answer_with_held_back_draft() -> None:
    answer = make_answer()
    answer.abstained, answer.held_back = True, "risk"
    answer.draft = answer.answer
    answer.answer = "I can't give a reliable answer from your documents."
    answer.sentences = []
    for s in answer.sources:
        s.attention_mass = None
    answer.attention_sink = 0.0
    page = render_html(answer)
    doc = tree(page)
    notice = " ".join(doc.xpath("string(//div[@class='notice'])").split())
    assert notice.startswith("Abstained.")
    assert "Up to 5 unused days" in doc.xpath("string(//details[@class='draft'])")
    assert doc.xpath("//details[@class='draft']//a[@class='cite']")
    assert not doc.xpath(f"//span[{cls('sent')}]") and not doc.xpath(f"//section[{cls('sentences')}]")
    assert [c.xpath("string(.//span[@class='att-v'])") for c in doc.xpath("//article")] == ["—"] * 3
    assert "hidden" in doc.xpath("//footer/p")[0].get("class")  # no sink to report
    assert report_data(page)["sentences"] == []


@pytest.mark.parametrize(("draft", "held_back", "reason"), [
    ("[1] leave-policy.md", "names_a_source", "it gave no answer beyond naming a source"),
    ("New employees get 40 days of leave [1].", "risk",
     "its hallucination risk (0.86) was too high to stand behind"),
])
def test_quotes_say_why_the_draft_was_held_back(draft: str, held_back: HeldBack, reason: str) -> None:
    answer = make_answer()
    answer.abstained, answer.answer_kind, answer.draft, answer.held_back = True, "quotes", draft, held_back
    answer.answer = "I could not verify a generated answer. Your documents say: “25 days” [1]"
    answer.sentences = []
    notice = " ".join(tree(render_html(answer)).xpath("string(//div[@class='notice quotes'])").split())
    assert f"The generated draft was held back: {reason}." in notice, notice


def test_inconsistent_offsets_and_non_finite_numbers_still_render() -> None:
    answer = make_answer()
    for s in answer.sentences:
        s.start, s.end = s.start + 500, s.end + 500  # point past the text
    answer.sentences[1].risk = float("nan")
    answer.sources[0].attention_mass = float("inf")
    answer.hallucination.threshold = float("nan")
    page = render_html(answer)
    doc = tree(page)
    assert len(doc.xpath(f"//span[{cls('sent')}]")) == 3
    assert "Unused days are paid out every March" in doc.xpath("string(//p[@class='answer'])")
    data = report_data(page)  # allow_nan=False would have raised
    assert data["threshold"] == 0.5


def test_no_sources_and_empty_answer() -> None:
    answer = make_answer()
    answer.sources, answer.sentences, answer.answer = [], [], ""
    doc = tree(render_html(answer))
    assert "No sources were retrieved." in doc.xpath("string(//div[@class='cards'])")
    assert "(empty answer)" in doc.xpath("string(//p[@class='answer'])")


def test_helpers() -> None:
    assert [format_share(x) for x in (0.57, 0.004, 0.0, None, 1.0)] == ["57%", "0.4%", "0%", "—", "100%"]
    assert format_ms(14.2) == "14 ms" and format_ms(5081.3) == "5.08 s"
    hues = [risk_hue(r / 10, 0.5) for r in range(11)]
    assert hues == sorted(hues, reverse=True) and hues[0] == 140 and hues[5] == 40 and hues[-1] == 0
    assert risk_level(0.9, True, 0.5) == "high" and risk_level(0.3, False, 0.5) == "mid"
    assert risk_level(0.1, False, 0.5) == "low"


def dump_dom(chromium: str, page: Path, fragment: str = "") -> str:
    """The DOM after the page's script ran, as headless Chromium serialises it."""
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--virtual-time-budget=2000", "--dump-dom",
             page.as_uri() + fragment],
            capture_output=True, text=True, timeout=120, check=True,
        ).stdout  # fmt: skip


@pytest.mark.slow  # spawns a headless Chromium
def test_script_runs_in_chromium_and_honours_focus_deep_link(tmp_path: Path, chromium: str) -> None:
    page = tmp_path / "report.html"
    page.write_text(render_html(make_answer()), encoding="utf-8")
    with tempfile.TemporaryDirectory() as profile:
        out = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--virtual-time-budget=2000", "--dump-dom",
             page.as_uri() + "#focus=2"],
            capture_output=True, text=True, timeout=120, check=True,
        ).stdout  # fmt: skip
    doc = tree(out)
    assert "selecting" in classes(doc.find(".//body"))
    (sent,) = doc.xpath(f"//span[@data-s='1' and {cls('sent')}]")
    assert {"active", "pinned"} <= classes(sent) and sent.get("aria-pressed") == "true"
    cards = doc.xpath("//article")
    assert [c.xpath("string(.//span[@class='s-v'])") for c in cards] == ["S2 55%", "S2 40%", "S2 5%"]
    assert "--w: 1.000" in cards[0].get("style") and "lit" in classes(cards[0])
    assert "cited" in classes(cards[1]) and "cited" not in classes(cards[2])
    lit_marks = doc.xpath(f"//mark[{cls('on')}]")  # sentence 2 cites [1, 2]: a passage in each
    assert [m.xpath("string(ancestor::article/@id)") for m in lit_marks] == ["src-1", "src-2"]
    assert all("1" in m.get("data-s").split() for m in lit_marks)


@pytest.mark.slow  # spawns a headless Chromium
def test_screenshot_script(tmp_path: Path, chromium: str) -> None:
    out = tmp_path / "report.png"
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "screenshot_report.py"), "demo", str(out), "--focus", "3",
         "--width", "900", "--height", "700"],
        check=True, capture_output=True, timeout=180,
    )  # fmt: skip
    head = out.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(head[16:20], "big") == 900 and int.from_bytes(head[20:24], "big") == 700
    quotes = tmp_path / "report-quotes.png"  # the held-back answer replaced by verbatim quotes
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "screenshot_report.py"), "demo-quotes", str(quotes),
         "--html", str(tmp_path / "report-quotes.html")],
        check=True, capture_output=True, timeout=180,
    )  # fmt: skip
    assert quotes.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc = tree((tmp_path / "report-quotes.html").read_text(encoding="utf-8"))
    assert doc.xpath("string(//span[@data-kind]/@data-kind)") == "quotes"
    assert len(doc.xpath("//mark[@class='quote']")) == 2


# ---- evidence, heads and the answer kind


def test_evidence_is_highlighted_on_exactly_its_text_in_its_source() -> None:
    answer = make_evidence_answer()
    doc = tree(render_html(answer))
    by_chunk = {s.chunk_id: s for s in answer.sources}
    expected: dict[str, dict[int, set[int]]] = {}  # card id -> sentence -> char positions in the chunk
    for i, s in enumerate(answer.sentences):
        for ev in s.evidence:
            src = by_chunk[ev.chunk_id]
            (card,) = doc.xpath(f"//article[@data-chunk='{ev.chunk_id}']")
            at = ev.char_start - src.char_start  # document offsets -> chunk offsets
            assert src.text[at : at + len(ev.text)] == ev.text
            expected.setdefault(card.get("id"), {}).setdefault(i, set()).update(range(at, at + len(ev.text)))
    for card in doc.xpath("//article"):
        (chunk,) = card.xpath(f".//div[{cls('chunk')}]")
        text, cover = mark_coverage(chunk)
        assert text == by_chunk[int(card.get("data-chunk"))].text  # marks add no text and lose none
        assert cover == expected.get(card.get("id"), {})
    assert not doc.xpath("//mark[@class='span']")  # the word-overlap guess is gone when evidence exists
    assert not doc.xpath(f"//*[{cls('heuristic')}]")
    assert "word-overlap" not in " ".join(doc.xpath("string(//footer)").split())


def test_evidence_marks_carry_each_sentences_mass_as_their_tint() -> None:
    doc = tree(render_html(make_evidence_answer()))
    marks = {m.text_content(): m for m in doc.xpath("//article[@id='src-1']//mark[@class='ev']")}
    shared = marks["25 days of paid annual leave"]  # inside S1's first span and S2's second
    assert shared.get("data-s") == "0 1" and shared.get("data-m") == "0.620 0.200"
    assert shared.get("data-rest") == "0.620" and shared.get("style") == "--m:0.620"
    assert "S1 (62%)" in shared.get("title") and "S2 (20%)" in shared.get("title")
    alone = marks["Employees who join during the year receive a pro-rated allowance."]
    assert alone.get("data-s") == "0" and alone.get("style") == "--m:0.210"
    assert "mark.ev" in render_html(make_evidence_answer())  # the script handles them
    evfor = doc.xpath(f"//article[@id='src-1']//div[{cls('evfor')}]//button")
    assert [" ".join(b.text_content().split()) for b in evfor] == ["S1 83%", "S2 68%"]


def test_a_sentence_citing_a_source_it_drew_nothing_from_is_marked() -> None:
    doc = tree(render_html(make_evidence_answer()))
    # S3 cites [3] but drew on the FAQ
    (chip,) = doc.xpath(f"//article[@id='src-3']//button[{cls('sref')}]")
    assert "nomatch" in classes(chip) and "drew no evidence" in chip.get("title")
    evfor = doc.xpath(f"//article[@id='src-2']//div[{cls('evfor')}]//button")
    assert [b.get("data-s") for b in evfor] == ["2"]


def test_stale_or_foreign_evidence_does_not_mark_other_text() -> None:
    answer = make_evidence_answer()
    s1 = answer.sentences[0]
    s1.evidence[0].char_start += 3  # a stale offset: found again by its text
    s1.evidence[1].chunk_id = 999  # a chunk that is not among the sources: listed, not marked
    doc = tree(render_html(answer))
    text, cover = mark_coverage(doc.xpath(f"//article[@id='src-1']//div[{cls('chunk')}]")[0])
    first = s1.evidence[0].text
    assert cover[0] == set(range(text.index(first), text.index(first) + len(first)))
    rows = doc.xpath(f"//div[{cls('sdetail')} and @data-s='0']//ol[@class='evl']/li")
    listed = [(r.xpath(f"string(*[{cls('chip')}])"), r.xpath("string(span[@class='evm'])")) for r in rows]
    assert listed == [("1", "62%"), ("?", "21%")]
    assert doc.xpath(f"//div[@data-s='0']//span[{cls('chip')} and {cls('missing')}]/@title")


def test_hover_and_focus_wiring_and_data_match_the_marks() -> None:
    answer = make_evidence_answer()
    page = render_html(answer)
    doc = tree(page)
    for i in range(3):  # each sentence: focusable in the answer, a button in the list
        (sent,) = doc.xpath(f"//span[{cls('sent')} and @data-s='{i}']")
        assert sent.get("tabindex") == "0" and sent.get("role") == "button"
        assert doc.xpath(f"//button[{cls('srow')} and @data-s='{i}']")
    (code,) = re.findall(r"<script>(.*?)</script>", page, flags=re.S)
    for hook in ('"mouseenter"', '"focus"', '"mouseleave"', '"blur"', "mark.ev", '"--m"'):
        assert hook in code
    data = report_data(page)
    assert data["kind"] == "generated"
    for i, s in enumerate(data["sentences"]):  # the script's evidence offsets are the marks' chunk offsets
        for e, ev in zip(s["evidence"], answer.sentences[i].evidence, strict=True):
            (chunk,) = doc.xpath(f"//article[@id='src-{e['n']}']//div[{cls('chunk')}]")
            text, cover = mark_coverage(chunk)
            assert text[e["start"] : e["end"]] == ev.text
            assert set(range(e["start"], e["end"])) <= cover[i]
    masses = [[e["mass"] for e in s["evidence"]] for s in data["sentences"]]
    assert masses == [[0.62, 0.21], [0.48, 0.2], [0.55]]


def test_heatmap_has_a_cell_per_layer_and_head_with_its_value() -> None:
    answer = make_evidence_answer()
    doc = tree(render_html(answer))
    figures = doc.xpath(f"//figure[{cls('heads')}]")
    assert len(figures) == 3
    for i, (fig, s) in enumerate(zip(figures, answer.sentences, strict=True)):
        (grid,) = fig.xpath(f".//div[{cls('hgrid')}]")
        assert grid.get("role") == "img" and grid.get("style") == f"--L:{LAYERS}"
        label = grid.get("aria-label")
        assert f"S{i + 1}" in label and f"{LAYERS} layers × {HEADS} heads" in label
        assert "highest L2·H1 0.97" in label  # the strong head is named first
        cells = grid.xpath("./i")
        assert len(cells) == LAYERS * HEADS
        seen = {(int(c.get("data-l")), int(c.get("data-h"))) for c in cells}
        assert seen == {(layer, h) for layer in range(LAYERS) for h in range(HEADS)}
        for c in cells:
            layer, h = int(c.get("data-l")), int(c.get("data-h"))
            assert c.get("title") == f"layer {layer} · head {h}: lookback {s.heads[layer][h]:.2f}"
        colours = {(int(c.get("data-l")), int(c.get("data-h"))): c.get("style") for c in cells}
        assert "hsl(212" in colours[(2, 1)] and "hsl(24" in colours[(0, 2)]  # sources vs the answer itself
        assert "highest L2·H1 0.97" in fig.xpath("string(.//figcaption)")
    assert doc.xpath(f"//div[{cls('hlegend')}]")


def test_missing_or_ragged_head_grids_render_no_heatmap() -> None:
    answer = make_evidence_answer()
    answer.sentences[0].heads = []
    answer.sentences[1].heads = [[0.5, 0.6], [0.7]]
    answer.sentences[2].heads[1][1] = float("nan")
    doc = tree(render_html(answer))
    assert [f.xpath("string(ancestor::div[1]/@data-s)") for f in doc.xpath("//figure")] == ["2"]
    report_data(render_html(answer))


def test_quotes_are_labelled_and_the_draft_stays_collapsed() -> None:
    answer = make_evidence_answer()
    draft = answer.answer
    leave = answer.sources[1]
    quote = "Every employee is entitled to 25 days of paid annual leave per calendar year."
    answer.abstained, answer.answer_kind, answer.draft, answer.sentences = True, "quotes", draft, []
    answer.held_back = "risk"
    answer.answer = f"I could not verify a generated answer. Your documents say: “{quote}” [1]"
    doc = tree(render_html(answer))
    (notice,) = doc.xpath(f"//div[{cls('notice')}]")
    text = " ".join(notice.text_content().split())
    assert text.startswith("Verbatim quotes, not a generated answer.")
    assert "draft was held back" in text and "word for word from your documents" in text
    (details,) = notice.xpath(".//details[@class='draft']")
    assert details.get("open") is None  # collapsed until asked for
    assert "Unused days are paid out every March" in details.xpath("string(.//p)")
    (kind,) = doc.xpath(f"//span[{cls('kind')}]")
    assert kind.get("data-kind") == "quotes" and kind.text == "verbatim quotes"
    (mark,) = doc.xpath("//article[@id='src-1']//mark[@class='quote']")
    assert mark.text == quote and leave.text.index(quote) >= 0
    assert "quoted verbatim" in doc.xpath("string(//article[@id='src-1']//p[@class='hl-note'])")
    assert doc.xpath("//p[@class='answer quoted']//a[@class='cite']/@href") == ["#src-1"]


def test_answer_kind_labels_generated_and_refusal() -> None:
    doc = tree(render_html(make_evidence_answer()))
    assert doc.xpath(f"string(//span[{cls('kind')}]/@data-kind)") == "generated"
    refusal = make_answer()
    refusal.abstained, refusal.answer_kind, refusal.sentences = True, "refusal", []
    refusal.held_back = "no_sources"
    refusal.answer = "I can't answer that from your documents: nothing I retrieved is relevant."
    doc = tree(render_html(refusal))
    assert doc.xpath(f"string(//span[{cls('kind')}]/@data-kind)") == "refusal"
    assert " ".join(doc.xpath("string(//div[@class='notice'])").split()).startswith("Abstained.")


def test_without_evidence_the_word_overlap_guess_is_labelled_heuristic() -> None:
    doc = tree(render_html(make_answer()))  # an answer stored before evidence existed
    notes = doc.xpath(f"//p[{cls('hl-note')} and {cls('heuristic')}]")
    assert [n.xpath("string(ancestor::article/@id)") for n in notes] == ["src-1", "src-2"]
    assert "word-overlap" in notes[0].text_content() and "not attention" in notes[0].text_content()
    assert not doc.xpath("//mark[@class='ev']") and not doc.xpath("//figure")


def test_evidence_text_and_heads_are_escaped() -> None:
    answer = make_evidence_answer()
    evil = '</script><img src=x onerror=alert(1)>'
    leave = answer.sources[1]
    leave.text = leave.text + " " + evil
    leave.char_end = leave.char_start + len(leave.text)
    answer.sentences[0].evidence.append(evidence(leave, evil, 0.3))
    page = render_html(answer)
    assert "<img" not in page
    doc = tree(page)
    assert not doc.xpath("//img")
    assert evil in [m.text_content() for m in doc.xpath("//mark[@class='ev']")]
    (blob,) = re.findall(r'<script type="application/json" id="report-data">(.*?)</script>', page, re.S)
    assert "<" not in blob and ">" not in blob


@pytest.mark.slow  # spawns a headless Chromium
def test_evidence_lights_up_for_a_deep_linked_sentence_in_chromium(tmp_path: Path, chromium: str) -> None:
    page = tmp_path / "report.html"
    page.write_text(render_html(make_evidence_answer()), encoding="utf-8")
    doc = tree(dump_dom(chromium, page, "#focus=2"))
    lit = doc.xpath(f"//mark[{cls('ev')} and {cls('on')}]")
    assert {m.text_content() for m in lit} >= {"25 days of paid annual leave"}
    assert all("1" in m.get("data-s").split() for m in lit)
    shared = next(m for m in lit if m.text_content() == "25 days of paid annual leave")
    assert "--m: 0.200" in shared.get("style")  # tinted by S2's mass, not S1's
    dark = doc.xpath(f"//mark[{cls('ev')} and not({cls('on')})]")
    assert dark and all("1" not in m.get("data-s").split() for m in dark)
    (detail,) = doc.xpath(f"//div[{cls('sdetail')} and {cls('active')}]")
    assert detail.get("data-s") == "1"


@pytest.mark.slow  # spawns a headless Chromium
def test_hover_and_keyboard_focus_light_the_evidence(tmp_path: Path, chromium: str) -> None:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install -e '.[test]')")
    page_file = tmp_path / "report.html"
    page_file.write_text(render_html(make_evidence_answer()), encoding="utf-8")

    def lit(page: Any) -> list[tuple[str, str]]:
        """(text, tint) of the evidence marks lit now."""
        js = "ms => ms.map(m => [m.textContent, getComputedStyle(m).getPropertyValue('--m').trim()])"
        return [(text, tint) for text, tint in page.eval_on_selector_all("mark.ev.on", js)]

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)  # CSP refusals
        page.goto(page_file.as_uri())
        assert lit(page) == []
        page.hover(".sent[data-s='0']")
        assert sorted(lit(page)) == sorted([
            ("Every employee is entitled to ", "0.620"),
            ("25 days of paid annual leave", "0.620"),
            (" per calendar year.", "0.620"),
            ("Employees who join during the year receive a pro-rated allowance.", "0.210"),
        ])
        page.mouse.move(0, 0)
        assert lit(page) == []
        page.focus(".sent[data-s='2']")  # keyboard focus, as Tab would give it
        faq = "No. Unused leave is not paid out, except when you leave the company."
        assert lit(page) == [(faq, "0.550")]
        page.screenshot(path=str(tmp_path / "report-focus-s3.png"), full_page=True)
        browser.close()
    assert errors == []
