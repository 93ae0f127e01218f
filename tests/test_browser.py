"""The web page in a real headless Chromium (Debian's), driven by Playwright."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from latentrec import fit, save

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


@pytest.fixture(scope="module")
def server(small_split, tmp_path_factory):
    net, _ = fit(small_split, "dot", epochs=3, progress=False)
    model_dir = save(net, tmp_path_factory.mktemp("browser") / "model", small_split.train)
    port = _free_port()
    command = [sys.executable, "-m", "latentrec", "serve", str(model_dir), "--port", str(port)]
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
    yield url
    process.terminate()
    process.wait(timeout=10)


def test_rate_recommend_similar_and_reload(server):
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 390, "height": 844})  # a phone's screen
        page.goto(server)
        page.fill("#search", "toy")
        page.click("#search-form button[type=submit]")
        results = page.locator("#results li")
        expect(results.first).to_contain_text("Toy")
        for row, stars in ((0, 5), (1, 4), (2, 5)):
            results.nth(row).locator(f"button[data-value='{stars}']").click()
        expect(page.locator("#rated li")).to_have_count(3)
        page.click("#recommend")
        expect(page.locator("#recommendations li")).to_have_count(10)
        expect(page.locator("#recommendations .meta").first).to_contain_text("Because you rated")
        page.locator("#recommendations li .title").first.click()
        expect(page.locator("#similar li")).to_have_count(10)
        page.screenshot(path=str(ARTIFACTS / "page.png"), full_page=True)
        page.reload()
        expect(page.locator("#rated li")).to_have_count(3)
        browser.close()
