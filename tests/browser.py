"""Headless Chromium for the page tests (and the README's screenshot), driven through selenium.

Uses Debian's `chromium` and `chromedriver` by their paths, so selenium never downloads a browser or a
driver. Chrome's logs give the console messages (`browser`) and every request the page made (`performance`,
the DevTools Network events).
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

CHROMIUM = os.environ.get("MEMSTUDY_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("MEMSTUDY_CHROMEDRIVER", "/usr/bin/chromedriver")


def missing() -> str | None:
    """Why no browser test can run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)) and not shutil.which(path):
            return f"{path} not found (apt-get install chromium chromium-driver; .ci/run does)"
    return None


def start(width: int = 1280, height: int = 900):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     f"--window-size={width},{height}", "--hide-scrollbars", "--force-device-scale-factor=1",
                     "--no-first-run", "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--disable-default-apps"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def open_page(driver: Any, path: Path, timeout_seconds: float = 20) -> None:
    """Load a page from disk and wait until its script says every chart is drawn (or failed)."""
    driver.get_log("browser")  # drop what earlier pages logged
    driver.get_log("performance")
    driver.get(Path(path).resolve().as_uri())
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if driver.execute_script("return document.body && document.body.dataset.ready"):
            return
        time.sleep(0.05)
    raise TimeoutError(f"{path}: the charts did not finish drawing in {timeout_seconds} s")


def requests(driver: Any) -> list[str]:
    """Every URL the page asked for since the last call (DevTools Network.requestWillBeSent)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def console_errors(driver: Any) -> list[str]:
    """Console messages of level SEVERE (errors, failed loads, CSP violations) since the last call."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def hover(driver: Any, chart_id: str, x: float, y: float) -> list[str]:
    """Move the real mouse to data point (x, y) of a chart; the hover label's lines."""
    from selenium.webdriver.common.action_chains import ActionChains

    element = driver.find_element("id", chart_id)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    left, top, width, height, px, py = driver.execute_script(
        """const gd = arguments[0], full = gd._fullLayout, box = gd.getBoundingClientRect();
           return [box.left, box.top, box.width, box.height,
                   full._size.l + full.xaxis.l2p(full.xaxis.d2l(arguments[1])),
                   full._size.t + full.yaxis.l2p(full.yaxis.d2l(arguments[2]))];""", element, x, y)
    # first off the plot (the title's strip), so a label still showing is never the last hover's
    ActionChains(driver, duration=0).move_to_element_with_offset(element, 0, int(5 - height / 2)).perform()
    deadline = time.monotonic() + 3
    while driver.execute_script("return !!arguments[0].querySelector('.hoverlayer .hovertext')", element):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{chart_id}: a hover label stays up with the mouse off the plot")
        time.sleep(0.02)
    ActionChains(driver, duration=0).move_to_element_with_offset(element, int(round(px - width / 2)),
                                                     int(round(py - height / 2))).perform()
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        lines = driver.execute_script(
            """const text = arguments[0].querySelector('.hoverlayer .hovertext text.nums');
               if (!text) return null;
               const lines = text.querySelectorAll('tspan.line');
               return lines.length ? Array.from(lines).map(t => t.textContent) : [text.textContent];""", element)
        if lines:
            return lines
        time.sleep(0.05)
    return []


def screenshot(page: Path, out: Path) -> Path:
    """The README's picture: a page's timeline, the mouse on its largest activation's band."""
    driver = start(1180, 830)
    try:
        open_page(driver, page)
        bands = driver.execute_script("return document.getElementById('timeline').data"
                                      ".filter(t => t.meta && t.meta.key !== undefined).map(t => t.meta)")
        band = max((b for b in bands if b["category"] == "activation"), key=lambda b: b["nbytes"])
        start_event, stop_event, bottom = max(band["runs"], key=lambda run: run[1] - run[0])
        hover(driver, "timeline", (start_event + stop_event) / 2, bottom + band["nbytes"] / 2)
        driver.execute_script("window.scrollTo(0, document.getElementById('section-timeline').offsetTop - 8)")
        time.sleep(0.2)
        driver.save_screenshot(str(out))
    finally:
        driver.quit()
    return out


if __name__ == "__main__":  # python tests/browser.py results/default/report.html docs/report-timeline.png
    import sys

    print(screenshot(Path(sys.argv[1]), Path(sys.argv[2])))
