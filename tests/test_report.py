"""The HTML attribution report: structure, escaping, self-containment, the script's data, and (where
Chromium is installed) that the page's script really runs and the screenshot script works."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import lxml.html
import pytest

from rag.report import format_ms, format_share, render_html, risk_hue, risk_level
from rag.types import Answer, Hallucination, SentenceAttribution, Source, Timings

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = next(
    (p for n in ("chromium", "chromium-browser", "google-chrome") if (p := shutil.which(n))), None
)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium)")

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
        model={"generator": "SmolLM2-135M-Instruct", "embedder": "all-MiniLM-L6-v2"},
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
    answer.abstained = True
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


@pytest.mark.slow  # spawns a headless Chromium
@needs_chromium
def test_script_runs_in_chromium_and_honours_focus_deep_link(tmp_path: Path) -> None:
    assert CHROMIUM is not None
    page = tmp_path / "report.html"
    page.write_text(render_html(make_answer()), encoding="utf-8")
    with tempfile.TemporaryDirectory() as profile:
        out = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
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
@needs_chromium
def test_screenshot_script(tmp_path: Path) -> None:
    out = tmp_path / "report.png"
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "screenshot_report.py"), "demo", str(out), "--focus", "3",
         "--width", "900", "--height", "700"],
        check=True, capture_output=True, timeout=180,
    )  # fmt: skip
    head = out.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(head[16:20], "big") == 900 and int.from_bytes(head[20:24], "big") == 700
