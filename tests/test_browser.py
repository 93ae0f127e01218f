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

from .test_serving import model_dir_for, raw_item, relabelled

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


@pytest.fixture(scope="module")
def kept_server(small_split, tmp_path_factory):
    """A service that keeps visitors' ratings in a SQLite file made by `latentrec db upgrade`."""
    folder = tmp_path_factory.mktemp("browser-db")
    url = f"sqlite:///{folder / 'visitors.db'}"
    upgrade = [sys.executable, "-m", "latentrec", "db", "upgrade", "--db", url]
    made = subprocess.run(upgrade, capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stdout + made.stderr
    with _serving(model_dir_for("int", small_split, tmp_path_factory), "--db", url) as address:
        yield address, url


def test_ratings_come_back_from_the_server_and_forget_me_removes_them(kept_server):
    from playwright.sync_api import expect

    from latentrec.database import Store

    address, url = kept_server
    with _browser_page() as (page, problems):
        # a rating this browser kept before the service kept any goes to the service once
        # (put there from a page of the same origin that runs no script of its own)
        page.goto(f"{address}/health")
        old = {"1": {"id": 1, "title": "Toy Story (1995)", "rating": 2}}
        page.evaluate("(old) => localStorage.setItem('latentrec.ratings', old)", json.dumps(old))
        page.goto(address)
        expect(page.locator("#forget")).to_be_visible()
        expect(page.locator("#clear")).to_be_hidden()
        expect(page.locator("#rated li")).to_have_count(1)
        assert page.evaluate("localStorage.getItem('latentrec.ratings')") is None
        page.fill("#search", "toy story")
        page.click("#search-form button[type=submit]")
        results = page.locator("#results li")
        expect(results.first).to_contain_text("Toy Story (1995)")
        for row, stars in ((0, 5), (1, 4)):
            with page.expect_response("**/ratings") as stored:
                results.nth(row).locator(f"button[data-value='{stars}']").click()
            assert stored.value.ok
        expect(page.locator("#rated li")).to_have_count(2)
        [cookie] = page.context.cookies()
        assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
        assert page.evaluate("document.cookie") == ""  # the page's scripts never see it
        with Store(url) as store:
            assert [rating for _, rating in store.ratings(cookie["value"])] == [5.0, 4.0]
        # the server's list, not localStorage's: after clearing it, in this tab and another
        page.evaluate("localStorage.clear()")
        page.reload()
        expect(page.locator("#rated li")).to_have_count(2)
        expect(page.locator("#rated li").first).to_contain_text("Toy Story (1995)")
        expect(page.locator("#rated li").first.locator("button.on")).to_have_count(5)
        # another tab: the same cookie, a localStorage of its own
        elsewhere = page.context.browser.new_context()
        elsewhere.add_cookies(page.context.cookies())
        other = elsewhere.new_page()
        other.goto(address)
        expect(other.locator("#rated li")).to_have_count(2)
        elsewhere.close()
        with page.expect_request("**/me/recommendations?k=10"):
            page.click("#recommend")
        expect(page.locator("#recommendations li")).to_have_count(10)
        expect(page.locator("#recommendations .meta").first).to_contain_text("Because you rated")
        page.screenshot(path=str(ARTIFACTS / "page-kept.png"), full_page=True)
        page.click("#forget")
        expect(page.locator("#rated li")).to_have_count(0)
        expect(page.locator("#status")).to_contain_text("2 stored ratings deleted")
        with Store(url) as store:
            assert not store.has_visitor(cookie["value"])
            assert store.ratings(cookie["value"]) == []
        assert page.context.cookies() == []
        page.reload()
        expect(page.locator("#recommend")).to_be_disabled()
        expect(page.locator("#rated li")).to_have_count(0)
        assert problems == []
