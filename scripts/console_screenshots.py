"""Drive the web console in headless Chromium: the browser tests' steps, and the screenshots in docs/.

    make screenshots            # after `make demo`: starts `fashion up --demo`, tours the console, stops it
    PYTHONPATH=. .venv/bin/python scripts/console_screenshots.py --url http://127.0.0.1:8080 --token T

Uses Debian's `chromium` and `chromium-driver` through Selenium, with the driver named explicitly: Selenium
Manager, Playwright and similar tools download a browser or driver build of their own, which cannot be had
offline. Each page is saved full-height as docs/console_<page>.png.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
WAIT_S = 60.0


def browser_missing() -> str | None:
    """Why no browser can be driven here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (make install)"
    if not any(shutil.which(name) for name in CHROMIUM):
        return "no Chromium: apt-get install chromium chromium-driver (.ci/run installs them)"
    if not shutil.which("chromedriver"):
        return "no chromedriver: apt-get install chromium-driver (.ci/run installs it)"
    return None


def chromium(width: int = 1280, height: int = 900):
    """Headless Chromium through the system's chromedriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = next(shutil.which(n) for n in CHROMIUM if shutil.which(n))
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--hide-scrollbars", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=shutil.which("chromedriver")))
    driver.set_page_load_timeout(WAIT_S)
    return driver


def wait_for(driver, css: str, timeout: float = WAIT_S):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css)))


def products_shown(driver) -> list[str]:
    from selenium.webdriver.common.by import By

    return [c.get_attribute("data-product") for c in driver.find_elements(By.CSS_SELECTOR, "#results .card")]


def search(driver, base: str, photo: Path | None, *, category: str = "", top_k: int | None = None) -> list[str]:
    """Search with `photo` (None: the photo the page keeps) and the category filter; the products shown."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    if photo is not None:
        driver.get(base + "/")
        driver.find_element(By.ID, "photo").send_keys(str(Path(photo).resolve()))
    field = driver.find_element(By.ID, "category")
    field.clear()
    field.send_keys(category)
    if top_k is not None:
        box = driver.find_element(By.ID, "top_k")
        box.clear()
        box.send_keys(str(top_k))
    marker = driver.find_element(By.TAG_NAME, "nav")
    driver.find_element(By.CSS_SELECTOR, "#search-form button[type=submit]").click()
    WebDriverWait(driver, WAIT_S).until(expected_conditions.staleness_of(marker))  # the page was replaced
    wait_for(driver, "#results, .error")
    return products_shown(driver)


def log_in(driver, base: str, token: str) -> None:
    """A fresh admin login (any earlier session cookie dropped first)."""
    from selenium.webdriver.common.by import By

    driver.get(base + "/models")
    driver.delete_all_cookies()
    driver.get(base + "/models")
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "form[action='/login'] button").click()
    wait_for(driver, "#models, .error")


def save_page(driver, path: Path) -> Path:
    """A screenshot of the whole page: the window grown to the document's height first."""
    width = driver.execute_script("return document.documentElement.clientWidth")
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(max(width, 1280), min(max(height, 700), 4000))
    deadline = time.monotonic() + WAIT_S
    while not driver.execute_script("return Array.from(document.images).every(i => i.complete)"):
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))
    driver.set_window_size(1280, 900)
    return path


def tour(base: str, photo: Path, token: str, out: Path) -> list[Path]:
    """Every page once, as a person would use it, saved as docs/console_<page>.png."""
    from selenium.webdriver.common.by import By

    driver = chromium()
    try:
        saved = []
        search(driver, base, photo, top_k=8)
        saved.append(save_page(driver, out / "console_search.png"))
        driver.get(base + "/catalogue")
        wait_for(driver, "article.product, .error")
        saved.append(save_page(driver, out / "console_catalogue.png"))
        log_in(driver, base, token)
        saved.append(save_page(driver, out / "console_models.png"))
        driver.get(base + "/health")
        wait_for(driver, "main")
        deadline = time.monotonic() + WAIT_S  # the dead letter published at start-up, once ingest has handled it
        while "screenshot-bad-event" not in driver.page_source and time.monotonic() < deadline:
            time.sleep(1.0)
            driver.refresh()
        saved.append(save_page(driver, out / "console_health.png"))
        assert driver.find_elements(By.TAG_NAME, "h1")
        return saved
    finally:
        driver.quit()


def dead_letter_one(bootstrap: str | None) -> None:
    """Publish one malformed upload, so the health page shows a dead letter with its reason (as after a bad
    producer), not an empty table."""
    if not bootstrap:
        return
    from kafka import KafkaProducer

    from services.ingest.events import UPLOADS_TOPIC

    producer = KafkaProducer(bootstrap_servers=bootstrap)
    try:
        producer.send(UPLOADS_TOPIC, key=b"screenshot-bad-event", value=b'{"product_id": 42}').get(timeout=30)
    finally:
        producer.close()


@contextmanager
def demo_stack(workdir: Path, token: str) -> Iterator[str]:
    """`fashion up --demo` on free ports; yields the console's URL, then SIGTERM."""
    state = workdir / "stack" / "stack.json"
    env = {**os.environ, "FASHION_PORT": "0", "FASHION_CONSOLE_PORT": "0", "FASHION_ADMIN_TOKEN": token,
           "PYTHONPATH": str(ROOT)}
    log_path = workdir / "console-up.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "services.cli", "up", "--demo", "--demo-dir", str(workdir)],
                                env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            deadline = time.monotonic() + 300
            while not (state.exists() and json.loads(state.read_text() or "{}").get("http")):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"`fashion up --demo` did not start; see {log_path}")
                time.sleep(0.5)
            described = json.loads(state.read_text())
            dead_letter_one(described.get("kafka_bootstrap"))
            yield described["http"]["web console"]
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running console (default: start `fashion up --demo` on --demo-dir)")
    parser.add_argument("--demo-dir", type=Path, default=ROOT / "var" / "demo")
    parser.add_argument("--photo", type=Path, help="the query photo (default: the demo's first held-out shopper "
                                                   "photo)")
    parser.add_argument("--token", default=os.environ.get("FASHION_ADMIN_TOKEN") or "console-screenshots")
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    if reason := browser_missing():
        raise SystemExit(reason)
    photo = args.photo or min((args.demo_dir / "data" / "consumer2shop" / "img").rglob("comsumer_*.jpg"))
    if args.url:
        saved = tour(args.url, photo, args.token, args.out)
    else:
        with demo_stack(args.demo_dir, args.token) as url:
            saved = tour(url, photo, args.token, args.out)
    for path in saved:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
