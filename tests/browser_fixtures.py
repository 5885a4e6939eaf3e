"""The HTML report opened in a real browser: Playwright driving the system Chromium.

Why Playwright on the system browser: it sees what a reader's browser sees (decoded images, console errors
such as Content-Security-Policy refusals, the DOM the navigation links point into), and with
``executable_path`` it uses Debian's Chromium (``scripts/install_browser.sh``), so nothing is downloaded.
``require_browser`` skips with the reason when Playwright or Chromium is missing.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

from experiments.report.browser_check import DEFAULT_CHROMIUM

# The report is one file:// page without scripts; these keep the browser from reaching anything else.
_ARGS = ["--disable-gpu", "--disable-quic", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--disable-dev-shm-usage", "--no-first-run", "--mute-audio"]


@dataclass(frozen=True)
class BrowserView:
    """What the page showed: every ``<img>``, the console errors, the navigation links and their targets."""

    images: list[dict]
    errors: list[str]
    nav: list[str]
    resolved: dict[str, bool]
    ids: set[str]


def browser_missing() -> str | None:
    """Why the browser tests cannot run here (``None`` when Playwright and Chromium are both there)."""
    if not DEFAULT_CHROMIUM.exists():
        return f"{DEFAULT_CHROMIUM} absent: run `bash scripts/install_browser.sh` (CI does)"
    if importlib.util.find_spec("playwright") is None:
        return "playwright not installed: pip install -e '.[dev]' (it uses the system Chromium, no download)"
    return None


def require_browser() -> ModuleType:
    """``playwright.sync_api``, or skip the test saying what is missing."""
    reason = browser_missing()
    if reason is not None:
        pytest.skip(reason)
    return importlib.import_module("playwright.sync_api")


def open_report(html: Path, *, width: int = 1200, height: int = 900) -> BrowserView:
    """Open ``html`` in headless Chromium, let it load, and read back images, errors and anchors."""
    sync_api = require_browser()
    errors: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(DEFAULT_CHROMIUM), headless=True, args=_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url[:80]}"))
            page.goto(html.resolve().as_uri(), wait_until="load")
            images = page.eval_on_selector_all(
                "img", "els => els.map(e => ({alt: e.alt, complete: e.complete, naturalWidth: e.naturalWidth,"
                       " naturalHeight: e.naturalHeight}))")
            nav = page.eval_on_selector_all("nav a", "els => els.map(a => a.getAttribute('href'))")
            resolved = {}
            for href in nav:
                page.click(f'nav a[href="{href}"]')
                resolved[href] = bool(page.evaluate(
                    "h => location.hash === h && document.getElementById(h.slice(1)) !== null", href))
            ids = set(page.eval_on_selector_all("[id]", "els => els.map(e => e.id)"))
        finally:
            browser.close()
    return BrowserView(images=images, errors=errors, nav=nav, resolved=resolved, ids=ids)


def assert_report_opens(html: Path, *, n_images: int | None = None) -> BrowserView:
    """Every image decoded (``naturalWidth > 0``), no console or page error, every nav anchor resolves."""
    view = open_report(html)
    assert view.images, "the report shows no image"
    if n_images is not None:
        assert len(view.images) == n_images
    broken = [i["alt"] for i in view.images if not (i["complete"] and i["naturalWidth"] > 0 and i["naturalHeight"] > 0)]
    assert broken == [], f"images that did not load: {broken}"
    assert view.errors == []
    assert view.nav and all(view.resolved.values()), view.resolved
    return view
