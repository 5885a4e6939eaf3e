"""Render an HTML file in a real browser (headless Chromium) and check that something was drawn.

Why a real browser and not an HTML parser: the report promises that it *opens* — inline images decode,
the CSS lays out, nothing is blocked by its Content-Security-Policy. Only a browser engine checks that.
Why the Chromium command line (``--screenshot``, ``--dump-dom``) and not a driver library: this runs at
the end of ``spirolm run`` (``report.screenshot``) and needs nothing but Debian's ``chromium`` package
(``scripts/install_browser.sh``). The tests also drive that same browser with Playwright (a dev
dependency, ``executable_path``, no browser download) to check images, console errors and anchors.

The browser runs with a fresh empty profile and with networking features off (no QUIC, no background
updates, no sync), so a screenshot depends only on the HTML file.

Usage::

    python -m experiments.report.browser_check runs/default/report/report.html report.png
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
from PIL import Image

from experiments.report.html_report import SECTION_IDS
from signals.errors import SpirolmInputError

#: Debian's package installs the browser here; ``SPIROLM_CHROMIUM`` overrides it.
DEFAULT_CHROMIUM = Path("/usr/bin/chromium")
INSTALL_HINT = ("install it with `bash scripts/install_browser.sh` (Debian/Ubuntu: "
                "`apt-get install --no-install-recommends chromium`), or set SPIROLM_CHROMIUM to a Chromium binary")
_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync",
          "--disable-dev-shm-usage", "--hide-scrollbars", "--force-device-scale-factor=1", "--mute-audio",
          "--disable-extensions", "--disable-default-apps", "--no-default-browser-check")


class BrowserNotFoundError(SpirolmInputError):
    """No Chromium binary where we looked (the message says how to install one)."""


@dataclass(frozen=True)
class RenderCheck:
    """What a render produced.

    Attributes:
        png: the screenshot.
        width, height: its size in pixels.
        ink_fraction: share of pixels that differ from the page's most common colour (background).
        n_colours: distinct colours (after quantising to 5 bits per channel).
        ids: element ``id`` attributes in the rendered DOM (empty unless ``required_ids`` were given).
    """

    png: Path
    width: int
    height: int
    ink_fraction: float
    n_colours: int
    ids: frozenset[str] = frozenset()


def find_chromium(chromium: str | Path | None = None) -> Path:
    """The Chromium binary: ``chromium`` argument, else ``$SPIROLM_CHROMIUM``, else ``/usr/bin/chromium``.

    Raises:
        BrowserNotFoundError: not there, with the install command.
    """
    candidate = Path(chromium or os.environ.get("SPIROLM_CHROMIUM") or DEFAULT_CHROMIUM)
    resolved = candidate if candidate.is_absolute() else Path(shutil.which(str(candidate)) or candidate)
    if not (resolved.is_file() and os.access(resolved, os.X_OK)):
        raise BrowserNotFoundError(f"headless Chromium not found at {candidate}; {INSTALL_HINT}")
    return resolved


def _run_chromium(chromium: Path, args: Sequence[str], html_file: Path, timeout_s: float) -> str:
    """Run Chromium on ``html_file`` with a throwaway profile; return stdout."""
    with tempfile.TemporaryDirectory(prefix="spirolm-chromium-") as profile:
        cmd = [str(chromium), *_FLAGS, f"--user-data-dir={profile}", *args, html_file.resolve().as_uri()]
        env = {**os.environ, "HOME": profile}  # keeps Chromium's caches out of the user's home
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"Chromium did not finish rendering {html_file} within {timeout_s:.0f} s") from None
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"Chromium exited with {proc.returncode} rendering {html_file}:\n{tail}")
    return proc.stdout


class _IdCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.ids.update(v for k, v in attrs if k == "id" and v)


def dump_dom_ids(html_file: str | Path, *, chromium: str | Path | None = None, timeout_s: float = 120) -> set[str]:
    """Element ids of the DOM as Chromium built it (``--dump-dom``): proof the page parsed as intended."""
    html_file = Path(html_file)
    if not html_file.is_file():
        raise SpirolmInputError("HTML file not found", file=html_file)
    dom = _run_chromium(find_chromium(chromium), ["--dump-dom"], html_file, timeout_s)
    parser = _IdCollector()
    parser.feed(dom)
    return parser.ids


def check_png(png_file: str | Path, *, width: int, height: int, min_ink: float = 0.005,
              min_colours: int = 8) -> RenderCheck:
    """Check a screenshot is the asked size and not blank (a single colour or nearly so).

    Raises:
        RuntimeError: missing, wrong size, or blank; the message says which.
    """
    png = Path(png_file)
    if not png.is_file() or png.stat().st_size == 0:
        raise RuntimeError(f"no screenshot was written to {png}")
    with Image.open(png) as img:
        size = img.size
        rgb = np.asarray(img.convert("RGB"))
    if size != (width, height):
        raise RuntimeError(f"screenshot {png} is {size[0]}x{size[1]}, expected {width}x{height}")
    quant = (rgb >> 3).reshape(-1, 3).astype(np.int32)
    codes = (quant[:, 0] << 10) | (quant[:, 1] << 5) | quant[:, 2]
    values, counts = np.unique(codes, return_counts=True)
    ink = 1.0 - counts.max() / codes.size
    if len(values) < min_colours or ink < min_ink:
        raise RuntimeError(f"screenshot {png} looks blank: {len(values)} colours, {ink:.2%} of pixels "
                           "differ from the background")
    return RenderCheck(png, size[0], size[1], float(ink), int(len(values)))


def screenshot_html(html_file: str | Path, png_file: str | Path, *, width: int = 1280, height: int = 4000,
                    required_ids: Sequence[str] = (), chromium: str | Path | None = None,
                    timeout_s: float = 120) -> RenderCheck:
    """Screenshot ``html_file`` with headless Chromium and check the page rendered.

    Chromium's ``--screenshot`` captures the window, not the whole page, so ``height`` sets how much of
    a long page is captured.

    Args:
        html_file: the page (opened as a ``file://`` URL).
        png_file: where the screenshot goes.
        width, height: window size in CSS pixels (device scale factor 1, so also PNG pixels).
        required_ids: element ids that must be in the rendered DOM (checked with ``--dump-dom``).
        chromium: the browser binary (default: ``$SPIROLM_CHROMIUM`` or ``/usr/bin/chromium``).
        timeout_s: per browser invocation.

    Returns:
        The :class:`RenderCheck` of the screenshot.

    Raises:
        BrowserNotFoundError: no Chromium (the message says how to install it).
        SpirolmInputError: ``html_file`` missing.
        RuntimeError: Chromium failed, the screenshot is missing, the wrong size or blank, or a
            required id is absent.
    """
    html_file, png_file = Path(html_file), Path(png_file)
    if not html_file.is_file():
        raise SpirolmInputError("HTML file not found", file=html_file)
    browser = find_chromium(chromium)
    png_file.parent.mkdir(parents=True, exist_ok=True)
    png_file.unlink(missing_ok=True)  # a stale screenshot must not pass the check
    _run_chromium(browser, [f"--screenshot={png_file.resolve()}", f"--window-size={width},{height}"], html_file,
                  timeout_s)
    result = check_png(png_file, width=width, height=height)
    if not required_ids:
        return result
    ids = dump_dom_ids(html_file, chromium=browser, timeout_s=timeout_s)
    missing = [i for i in required_ids if i not in ids]
    if missing:
        raise RuntimeError(f"rendered page {html_file} lacks element id(s) {', '.join(missing)}")
    return RenderCheck(result.png, result.width, result.height, result.ink_fraction, result.n_colours,
                       frozenset(ids))


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m experiments.report.browser_check REPORT.html OUT.png [--width W --height H]``."""
    parser = argparse.ArgumentParser(description="Screenshot an HTML report with headless Chromium and check it.")
    parser.add_argument("html_file", type=Path)
    parser.add_argument("png_file", type=Path)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=4000)
    parser.add_argument("--no-ids", action="store_true", help="do not require the spirolm report's section ids")
    args = parser.parse_args(argv)
    check = screenshot_html(args.html_file, args.png_file, width=args.width, height=args.height,
                            required_ids=() if args.no_ids else SECTION_IDS)
    print(f"{check.png}: {check.width}x{check.height}, {check.n_colours} colours, "
          f"{check.ink_fraction:.1%} non-background pixels, {len(check.ids)} element ids")


if __name__ == "__main__":
    main()
