"""The report pages in a real headless Chromium (Debian's `chromium`, driven by Playwright).

The daemon's app runs in process on a loopback port (as in test_server.py), with a canary that the
ticks roll back and one that an alert pauses; the page of the rolled-back one is the screenshot the
README shows (docs/report-rolled-back.png; CANARYD_UPDATE_SCREENSHOT=1 rewrites it). `analyze --report` is opened from its file.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from canaryd.cli import main
from test_server import Stack, _stack, alert, message

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
ROOT = Path(__file__).resolve().parent.parent
SCREENSHOT = ROOT / "docs" / "report-rolled-back.png"
SCRIPT = "<script>document.title='pwned'</script>"

if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
    pytest.skip("chromium is not installed (apt-get install -y chromium)", allow_module_level=True)
async_api = pytest.importorskip("playwright.async_api", reason="playwright is not installed (pip install playwright)")


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with async_api.async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
                                    args=ARGS)
        try:
            yield b
        finally:
            await b.close()


async def _open(browser: Any, url: str, *, scheme: str = "light") -> tuple[Any, list[str]]:
    page = await browser.new_page(viewport={"width": 1100, "height": 900}, color_scheme=scheme)
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda err: problems.append(f"pageerror: {err}"))
    # Self-contained: nothing is fetched but the pages themselves.
    page.on("request", lambda r: None if r.is_navigation_request() else problems.append(f"request: {r.url}"))
    response = await page.goto(url)
    assert response is not None and response.status == 200
    return page, problems


@pytest.fixture
async def stack(aiohttp_client: Any) -> AsyncIterator[Stack]:
    async for s in _stack(aiohttp_client):
        yield s


async def _roll_back_by_analysis(stack: Stack) -> dict[str, Any]:
    """orion/auth-service passes two steps, then its canary starts failing 3 % of its requests."""
    assert (await stack.post("orion", "auth-service", "start")).status == 200
    errors, last_total = 0.0, None
    for i in range(80):
        total = 1000.0 * (stack.clock.now + 1.0 - 1_600_000_000.0)  # what the fake will answer next tick
        status = await stack.canary()
        if status["weight"] >= 50 and last_total is not None:
            errors += 0.03 * (total - last_total)
        last_total = total
        stack.prometheus.canary_errors = f"{errors:.0f}"
        await stack.tick()
        if (await stack.canary())["phase"] == "rolled_back":
            break
        assert i < 79, "the canary was never rolled back"
    status = await stack.canary()
    assert status["last_decision"]["trigger"] == "analysis"
    return status


async def test_a_rolled_back_canary_shows_its_rollback_evidence_and_reason(stack: Stack, browser: Any,
                                                                         tmp_path: Path) -> None:
    status = await _roll_back_by_analysis(stack)
    failed = [m for m in status["last_decision"]["metrics"] if m["verdict"] == "fail"]
    assert failed
    url = str(stack.client.make_url("/ui/canaries/orion/auth-service"))
    page, problems = await _open(browser, url)
    assert await page.locator('[data-kind="rollback"]').count() == 1
    assert await page.locator('[data-kind="advance"]').count() >= 1
    crossings = page.locator(f'.crossing[data-metric="{failed[0]["name"]}"]')
    assert await crossings.count() >= 1
    row = page.locator(f'#verdicts tr.fail[data-metric="{failed[0]["name"]}"]')
    assert await row.inner_text() != "" and failed[0]["reason"] in await row.inner_text()
    assert failed[0]["reason"] in await page.locator("#last-decision").inner_text()
    # The README's picture is refreshed on request only, so that a test run leaves the tree as it was.
    shot = SCREENSHOT if os.environ.get("CANARYD_UPDATE_SCREENSHOT") == "1" else tmp_path / SCREENSHOT.name
    await page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    dark, dark_problems = await _open(browser, url, scheme="dark")
    background = await dark.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(18, 22, 29)"
    assert problems == [] and dark_problems == []

    index, index_problems = await _open(browser, str(stack.client.make_url("/ui/")))
    await index.get_by_role("link", name="orion/auth-service").click()
    assert await index.locator('[data-kind="rollback"]').count() == 1
    assert index_problems == []


async def test_an_alert_holding_a_script_shows_it_as_text(stack: Stack, browser: Any) -> None:
    assert (await stack.post("shop", "cart", "start")).status == 200
    await stack.tick()
    hold = alert("CanaryLatencyHigherThanStable", canary=None, namespace="shop", service="cart", team=SCRIPT)
    hold["annotations"]["summary"] = SCRIPT
    assert (await stack.alert(message(hold))).status in (200, 202)
    for w in stack.controller.workers.values():
        await w.barrier()
    assert (await stack.canary("shop", "cart"))["phase"] == "paused"
    page, problems = await _open(browser, str(stack.client.make_url("/ui/canaries/shop/cart")))
    assert await page.title() == "shop/cart: canary report"
    assert await page.locator("script").count() == 0
    assert SCRIPT in await page.locator("#last-decision").inner_text()
    assert await page.locator('[data-kind="alert"]').count() == 1 and await page.locator('[data-kind="pause"]').count() == 1
    assert problems == []


async def test_analyze_report_renders_without_console_errors(tmp_path: Path, browser: Any) -> None:
    out = tmp_path / "bad.html"
    assert main(["analyze", "-i", str(ROOT / "examples" / "replay-bad-canary.json"), "--report", str(out)]) == 1
    assert out.stat().st_size < 500_000
    page, problems = await _open(browser, out.as_uri())
    assert await page.locator('[data-kind="rollback"]').count() == 1
    assert await page.locator('.crossing[data-metric="error_ratio"]').count() == 1
    assert "ratio above 2× is significant" in await page.locator('#verdicts tr.fail[data-metric="error_ratio"]').inner_text()
    assert problems == []
