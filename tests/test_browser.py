"""The web page in a real headless Chromium (Debian's), driven by Playwright."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from latentrec import fit, save

from .test_serving import raw_item, relabelled

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / ".artifacts"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason="needs Debian's chromium (make browser)"
    ),
]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def _serving(model_dir: Path, *options: str):
    """`latentrec serve` in a child process; yields its URL once /health answers."""
    port = _free_port()
    command = [sys.executable, "-m", "latentrec", "serve", str(model_dir), "--port", str(port)]
    command += options
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        process.kill()
        pytest.fail("the server did not start: " + process.stdout.read().decode()[-2000:])
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextlib.contextmanager
def _browser_page():
    """A phone-sized page, and a list that collects its console errors and failed requests."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 390, "height": 844})  # a phone's screen
        problems: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on(
            "response",
            lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None,
        )
        try:
            yield page, problems
        finally:
            browser.close()


@pytest.fixture(scope="module")
def server(small_split, tmp_path_factory):
    """What `make serve` serves: lists from an ease model, predicted stars from a dot model."""
    folder = tmp_path_factory.mktemp("browser")
    stars, _ = fit(small_split, "dot", epochs=3, progress=False)
    lists, _ = fit(small_split, "ease", progress=False)
    save(stars, folder / "stars", small_split.train)
    save(lists, folder / "lists", small_split.train)
    with _serving(folder / "lists", "--rating-model", str(folder / "stars")) as url:
        yield url


def test_rate_recommend_similar_and_reload(server):
    from playwright.sync_api import expect

    with _browser_page() as (page, problems):
        page.goto(server)
        page.fill("#search", "toy")
        page.click("#search-form button[type=submit]")
        results = page.locator("#results li")
        expect(results.first).to_contain_text("Toy")
        expect(results.first.locator(".stars button")).to_have_count(5)  # 0.5..5: stars 1..5
        for row, stars in ((0, 5), (1, 4), (2, 5)):
            results.nth(row).locator(f"button[data-value='{stars}']").click()
        expect(page.locator("#rated li")).to_have_count(3)
        page.click("#recommend")
        expect(page.locator("#recommendations li")).to_have_count(10)
        # the ranking model's list carries the rating model's predicted stars
        score = page.locator("#recommendations .score").first
        expect(score).to_contain_text("★")
        expect(score).to_have_attribute("title", "predicted rating (from the rating model)")
        expect(page.locator("#recommendations .meta").first).to_contain_text("Because you rated")
        page.locator("#recommendations li .title").first.click()
        expect(page.locator("#similar li")).to_have_count(10)
        page.screenshot(path=str(ARTIFACTS / "page.png"), full_page=True)
        page.reload()
        expect(page.locator("#rated li")).to_have_count(3)
        # the page, its favicon and its scripts load under the CSP without a 404 (issue 14, 7)
        assert problems == []


def test_api_docs_work_under_their_policy(server):
    from playwright.sync_api import expect

    with _browser_page() as (page, problems):
        page.goto(f"{server}/docs")
        expect(page.locator(".opblock").first).to_be_visible()
        assert page.locator(".opblock").count() >= 6
        assert problems == []


@pytest.fixture(scope="module")
def big_server(small_split, tmp_path_factory):
    """A model on a 1..10 scale whose item ids are beyond 2^53 (2^60 + the bundled id)."""
    train = relabelled(small_split.train, "big")
    train = replace(train, rating=train.rating * 2)
    net, _ = fit(train, "dot", epochs=2, progress=False)
    model_dir = save(net, tmp_path_factory.mktemp("browser-big") / "model", train)
    with _serving(model_dir) as url:
        yield url


def test_stars_follow_the_scale_and_big_ids_stay_exact(big_server):
    # the stars were fixed at 1..5, and ids were sent back through Number() (issue 14, 3 and 5)
    from playwright.sync_api import expect

    toy = str(raw_item("big", 1))
    with _browser_page() as (page, problems):
        page.goto(big_server)
        expect(page.locator("#scale")).to_contain_text("1 to 10")
        page.fill("#search", "toy story")
        page.click("#search-form button[type=submit]")
        first = page.locator("#results li").first
        expect(first).to_contain_text("Toy Story (1995)")
        expect(first.locator(".stars button")).to_have_count(10)
        first.locator("button[data-value='10']").click()
        stored = json.loads(page.evaluate("localStorage.getItem('latentrec.ratings')"))
        assert stored == {toy: {"id": toy, "title": "Toy Story (1995)", "rating": 10}}
        with page.expect_request("**/recommendations") as sent:
            page.click("#recommend")
        assert sent.value.post_data_json["ratings"] == [{"item_id": toy, "rating": 10}]
        expect(page.locator("#recommendations li")).to_have_count(10)
        assert page.locator("#status").text_content() == ""
        page.locator("#rated li .title").first.click()
        expect(page.locator("#similar li")).to_have_count(10)
        page.screenshot(path=str(ARTIFACTS / "page-1-to-10.png"), full_page=True)
        assert problems == []
