"""Open a report in real headless Chromium (Selenium + chromedriver): does it render, load, stay quiet?

    check = check_report("runs/default/report.html", screenshot="docs/report.png")
    check -> {"title", "images", "broken_images", "console_errors", "height_px", "screenshot"}

Used by the report test and to take the README's screenshot. Needs Debian's `chromium` and
`chromium-driver` (the Makefile's apt-deps installs them) and the `selenium` package.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from sparsa.errors import SparsaError

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage")


def chromium_available() -> str | None:
    """None when a headless check can run, else the reason it cannot."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "the selenium package is not installed (pip install selenium)"
    for exe in ("chromium", "chromedriver"):
        if _which(exe) is None:
            return f"{exe} is not installed (apt-get install chromium chromium-driver)"
    return None


def _which(name: str) -> str | None:
    alts = {"chromium": ("chromium", "chromium-browser"), "chromedriver": ("chromedriver",)}[name]
    return next((p for a in alts if (p := shutil.which(a))), None)


def check_report(html_path: str | Path, screenshot: str | Path | None = None, width: int = 1200,
                 max_height: int = 6000) -> dict:
    reason = chromium_available()
    if reason:
        raise SparsaError(f"cannot open the report in a browser: {reason}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    html_path = Path(html_path).resolve()
    profile = tempfile.mkdtemp(prefix="sparsa-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = _which("chromium")
    for f in CHROMIUM_FLAGS:
        opts.add_argument(f)
    opts.add_argument(f"--user-data-dir={profile}")  # a fresh profile: nothing cached, nothing shared
    opts.add_argument(f"--window-size={width},1000")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(_which("chromedriver")), options=opts)
    try:
        driver.set_page_load_timeout(60)
        driver.get(html_path.as_uri())
        driver.execute_script("return document.readyState")
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight]);")
        height = int(driver.execute_script("return document.documentElement.scrollHeight;"))
        out = {
            "title": driver.title,
            "images": len(images),
            "broken_images": [alt for alt, done, w, h in images if not done or w <= 0 or h <= 0],
            "image_sizes": [[w, h] for _, _, w, h in images],
            "console_errors": [e["message"] for e in driver.get_log("browser") if e.get("level") in ("SEVERE", "ERROR")],
            "console": [e["message"] for e in driver.get_log("browser")],
            "height_px": height,
            "tables": int(driver.execute_script("return document.querySelectorAll('table').length;")),
            "text": driver.execute_script("return document.body.innerText;"),
        }
        if screenshot is not None:
            driver.set_window_size(width, min(max(height, 600), max_height))
            Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(screenshot))
            out["screenshot"] = str(screenshot)
        return out
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
