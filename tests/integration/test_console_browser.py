"""The web console in a real browser: headless Chromium (Debian's chromium + chromium-driver, through Selenium)
against a real `fashion up` (one process: every service, its Kafka broker, Postgres, Qdrant local mode, a
trained checkpoint, and the console on a port of its own). Skipped, saying why, only where no browser is
installed; `.ci/run` installs one."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from html.parser import HTMLParser
from pathlib import Path

import pytest
import sqlalchemy as sa

from shared.data.deepfashion import load_benchmark
from shared.db.session import create_database_if_missing, drop_database, make_engine

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import console_screenshots as browser  # noqa: E402 (the screenshot script's steps are the tests' steps)

pytestmark = pytest.mark.skipif(bool(browser.browser_missing()), reason=str(browser.browser_missing()))

TOKEN = "console-test-token"
FASHION = [sys.executable, "-m", "services.cli"]


def _wait_for(condition, timeout: float, what: str, proc: subprocess.Popen):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"`fashion up` exited with {proc.returncode} while waiting for {what}")
        if value := condition():
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture(scope="module")
def stack(catalogue, tmp_path_factory):
    """`fashion up` with the console on a free port, the catalogue published and indexed."""
    root, checkpoint = catalogue
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/fashion_console_{uuid.uuid4().hex[:8]}"
    create_database_if_missing(url)
    work = tmp_path_factory.mktemp("console")
    env = {**os.environ, "FASHION_DATA_DIR": str(work / "var"), "FASHION_DATABASE_URL": url, "FASHION_PORT": "0",
           "FASHION_CONSOLE_PORT": "0", "FASHION_ADMIN_TOKEN": TOKEN, "FASHION_GRACE_SECONDS": "5",
           "FASHION_IMAGE_ROOTS": str(root)}
    engine = make_engine(url)
    with (work / "up.log").open("w") as log:
        proc = subprocess.Popen([*FASHION, "up", "--checkpoint", str(checkpoint)], env=env, stdout=log,
                                stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            state_file = work / "var" / "stack.json"
            _wait_for(state_file.exists, 180, "fashion up to start", proc)
            console_url = json.loads(state_file.read_text())["http"]["web console"]
            published = subprocess.run([*FASHION, "publish", str(root)], env=env, capture_output=True, text=True,
                                       timeout=120, check=False)
            assert published.returncode == 0, published.stderr

            def indexed() -> bool:
                with engine.connect() as conn:
                    return conn.execute(sa.text("select count(*) from products")).scalar() == len(products(root))

            _wait_for(indexed, 120, "the catalogue to be indexed", proc)
            yield console_url, engine, root
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
            engine.dispose()
            drop_database(url)


@pytest.fixture(scope="module")
def driver():
    chromium = browser.chromium()
    yield chromium
    chromium.quit()


def products(root: Path) -> set[str]:
    return {r.item_id for r in load_benchmark(root, "consumer2shop").records}


def shown_categories(driver) -> dict[str, str]:
    """product id -> category, as the result cards show them."""
    from selenium.webdriver.common.by import By

    return {c.get_attribute("data-product"): c.get_attribute("data-category")
            for c in driver.find_elements(By.CSS_SELECTOR, "#results .card")}


def consumer_photos(root: Path) -> list[tuple[Path, str]]:
    bench = load_benchmark(root, "consumer2shop")
    seen: dict[str, Path] = {}
    for r in bench.records:
        if r.domain == "consumer" and r.item_id not in seen:
            seen[r.item_id] = bench.path(r)
    return [(path, item) for item, path in sorted(seen.items())]


def test_a_consumer_photo_finds_its_true_product(stack, driver) -> None:
    base, _, root = stack
    photos = consumer_photos(root)[:3]
    found = 0
    for photo, item in photos:
        shown = browser.search(driver, base, photo, top_k=5)  # half the catalogue
        assert len(shown) == 5, driver.page_source[:2000]
        found += item in shown
    assert found >= 2, f"the true product was among the 5 results for {found} of {len(photos)} consumer photos"
    # The query analysis: the photo with its landmarks, the category, attributes with their scores.
    page = driver.page_source
    assert 'alt="query photo"' in page and 'class="legend"' in page
    assert re.search(r'class="chip">[^<]+ 0\.\d\d<', page), "attributes are shown with their scores"


def test_a_category_filter_narrows_the_results(stack, driver) -> None:
    base, _, root = stack
    browser.search(driver, base, consumer_photos(root)[0][0], top_k=len(products(root)))  # the whole catalogue
    everything = shown_categories(driver)
    wanted = everything[next(iter(everything))]  # the best hit's category, as the catalogue has it
    shown = browser.search(driver, base, None, category=wanted, top_k=len(products(root)))  # the kept photo
    assert set(shown) == {p for p, c in everything.items() if c == wanted} and len(shown) < len(everything)
    assert set(shown_categories(driver).values()) == {wanted}


def test_a_click_reaches_postgres_with_the_real_query_id(stack, driver) -> None:
    from selenium.webdriver.common.by import By

    base, engine, root = stack
    browser.search(driver, base, consumer_photos(root)[1][0], top_k=4)
    card = driver.find_elements(By.CSS_SELECTOR, "#results .card")[1]
    query_id = card.find_element(By.CSS_SELECTOR, "input[name=query_id]").get_attribute("value")
    product_id = card.get_attribute("data-product")
    card.find_element(By.CSS_SELECTOR, "form.click button").click()
    _wait = time.monotonic() + 30
    while card.find_element(By.CSS_SELECTOR, ".status").text != "click recorded" and time.monotonic() < _wait:
        time.sleep(0.2)
    assert card.find_element(By.CSS_SELECTOR, ".status").text == "click recorded"

    def stored():
        with engine.connect() as conn:
            return conn.execute(sa.text("select product_id, position from clicks where query_id = :q"),
                                {"q": query_id}).all()

    deadline = time.monotonic() + 60
    while not stored() and time.monotonic() < deadline:
        time.sleep(0.3)
    assert [tuple(r) for r in stored()] == [(product_id, 1)]


def test_admin_login_shows_the_models_and_a_wrong_token_is_refused(stack, driver) -> None:
    from selenium.webdriver.common.by import By

    base, engine, _ = stack
    browser.log_in(driver, base, "not-the-token")
    assert "admin token was refused" in driver.find_element(By.CSS_SELECTOR, ".error").text
    assert not driver.find_elements(By.ID, "models") and not driver.get_cookies()

    browser.log_in(driver, base, TOKEN)
    with engine.connect() as conn:
        serving = conn.execute(sa.text("select version from model_versions where state = 'serving'")).scalar_one()
    rows = driver.find_elements(By.CSS_SELECTOR, "#models tbody tr")
    assert any(serving in row.text and "serving" in row.text for row in rows)
    cookies = driver.get_cookies()
    assert len(cookies) == 1 and cookies[0]["httpOnly"] and cookies[0]["sameSite"] == "Strict"
    assert TOKEN not in driver.current_url and TOKEN not in driver.page_source and TOKEN not in cookies[0]["value"]


def test_a_bad_photo_gets_a_readable_error_not_a_traceback(stack, driver, tmp_path) -> None:
    from selenium.webdriver.common.by import By

    base, _, _ = stack
    bogus = tmp_path / "not-a-photo.jpg"
    bogus.write_bytes(b"this is text, not an image")
    browser.search(driver, base, bogus)
    error = driver.find_element(By.CSS_SELECTOR, ".error").text
    assert "expected an image" in error and "Traceback" not in driver.page_source


class _Accessibility(HTMLParser):
    """Basic checks: a language, a title, alt text on every image, a label on every form field."""

    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self.labelled: set[str] = set()
        self.fields: list[tuple[str, dict]] = []
        self.seen_title = self.has_lang = False
        self._label_depth = 0

    def handle_starttag(self, tag: str, attrs) -> None:
        a = dict(attrs)
        if tag == "html":
            self.has_lang = bool(a.get("lang"))
        elif tag == "title":
            self.seen_title = True
        elif tag == "img" and not (a.get("alt") or "").strip():
            self.problems.append(f"img without alt text: {a.get('src', '')[:60]}")
        elif tag == "label":
            self._label_depth += 1
            if a.get("for"):
                self.labelled.add(a["for"])
        elif (tag in ("input", "select", "textarea") and a.get("type") not in ("hidden", "submit")
              and not (self._label_depth or a.get("aria-label"))):
            self.fields.append((tag, a))

    def handle_endtag(self, tag: str) -> None:
        if tag == "label":
            self._label_depth -= 1

    def report(self) -> list[str]:
        problems = list(self.problems)
        problems += [f"{tag} {a.get('name')!r} without a label" for tag, a in self.fields
                     if a.get("id") not in self.labelled]
        problems += [] if self.has_lang else ["<html> without lang"]
        problems += [] if self.seen_title else ["no <title>"]
        return problems


def test_every_page_has_labels_and_alt_text(stack, driver) -> None:
    base, _, root = stack
    pages = {}
    browser.search(driver, base, consumer_photos(root)[0][0], top_k=5)
    pages["search"] = driver.page_source
    for name in ("catalogue", "health"):
        driver.get(f"{base}/{name}")
        pages[name] = driver.page_source
    browser.log_in(driver, base, TOKEN)
    pages["models"] = driver.page_source
    driver.delete_all_cookies()
    driver.get(f"{base}/models")
    pages["login"] = driver.page_source
    pages["similar"] = urllib.request.urlopen(f"{base}/similar?product_id={consumer_photos(root)[0][1]}",
                                              timeout=30).read().decode()
    for name, html in pages.items():
        checker = _Accessibility()
        checker.feed(html)
        assert checker.report() == [], name
        assert "Traceback" not in html
