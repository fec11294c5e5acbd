"""A new user's first hour, in a real browser (headless Chromium driven by Selenium) against
`make run` itself (`python -m feedsite.devrun`: SQLite and the embedded Redis, as on a fresh
clone), with every host but 127.0.0.1 unreachable: the pages must work offline.

.ci/run installs Chromium and its driver (Debian's chromium and chromium-driver) when missing; on a
machine without them these tests are skipped, except under CI, where that is a failure.
Screenshots go to var/screenshots/ (`make screenshots` writes the README's, docs/screenshots/).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from feedsite.api.renderers import next_link
from feedsite.embedded import free_port, stop_group

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SHOTS = Path(os.environ.get("FEEDSITE_SCREENSHOT_DIR") or ROOT / "var" / "screenshots")
ADMIN = ("admin", "admin")

pytestmark = pytest.mark.browser


def _require_browser() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
    if missing and os.environ.get("CI"):
        pytest.fail(f"CI must have Chromium and its driver (.ci/run installs them): {missing}")
    if missing:
        pytest.skip(f"no Chromium here ({missing}): apt-get install chromium chromium-driver")


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[dict]:
    """`make run` on a fresh clone: no DATABASE_URL, no REDIS_URL, an empty var/ folder."""
    _require_browser()
    var = tmp_path_factory.mktemp("makerun")
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "FEEDSITE_KEY_PREFIX"}
    }
    env.update(
        PORT=str(port),
        FEEDSITE_VAR_DIR=str(var),
        FEEDSITE_EMBEDDED_REDIS_PORT=str(free_port()),
        WEB_CONCURRENCY="2",
        WORKER_CONCURRENCY="2",
    )
    log_path = var / "makerun.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "feedsite.devrun"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 180
        text = ""
        while "Ctrl-C stops everything" not in text:
            assert proc.poll() is None, f"make run exited:\n{log_path.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"make run not up:\n{text[-3000:]}"
            time.sleep(0.5)
            text = log_path.read_text()
        banner = text[text.index("feedsite is up") : text.index("Ctrl-C stops everything")]
        urls = re.findall(r"http://127\.0\.0\.1:\d+/\S*", banner)
        yield {"base": f"http://127.0.0.1:{port}", "urls": urls, "log": log_path}
    finally:
        stop_group(proc, timeout=30)


@pytest.fixture(scope="module")
def browser(stack) -> Iterator:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # CSP refusals
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
        # Offline: every host but 127.0.0.1 fails to resolve (a CDN asset would not load).
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _api(base: str, method: str, path: str, body: dict | None = None, token: str = "") -> dict:
    request = urllib.request.Request(  # noqa: S310 (loopback, http)
        base + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json", "Accept": "application/json"}
        | ({"Authorization": f"Token {token}"} if token else {}),
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (loopback)
        raw = response.read()
        return {"status": response.status, "headers": dict(response.headers)} | (
            {"json": json.loads(raw)} if raw else {}
        )


@pytest.fixture(scope="module")
def seeded(stack) -> dict:
    """Two authors the demo admin follows, with enough activities for several feed pages, all
    fanned out by make run's worker."""
    base = stack["base"]
    credentials = {"username": ADMIN[0], "password": ADMIN[1]}
    admin_token = _api(base, "POST", "/api/auth/token/", credentials)["json"]["token"]
    for name in ("ana", "bo"):
        user = _api(base, "POST", "/api/auth/register/", {"username": name, "password": "pw-" * 4})
        token = _api(base, "POST", "/api/auth/token/", {"username": name, "password": "pw-" * 4})
        _api(base, "POST", f"/api/users/{user['json']['id']}/follow/", token=admin_token)
        for i in range(3):
            _api(
                base,
                "POST",
                "/api/activities/",
                {"verb": f"posted{i}", "object_type": "note", "object_id": f"{name}-{i}"},
                token=token["json"]["token"],
            )
    deadline = time.monotonic() + 60
    while len(_api(base, "GET", "/api/feed/?limit=50", token=admin_token)["json"]["items"]) < 6:
        assert time.monotonic() < deadline, "the worker did not fan out the seeded activities"
        time.sleep(0.3)
    return {"admin_token": admin_token}


def _same_origin_resources(driver, base: str) -> list[str]:
    """The URLs of every resource the page asked for from another origin that its Content
    Security Policy did not block before the request left the browser (the console reports
    those)."""
    entries = driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    refused = " ".join(
        e["message"]
        for e in driver.get_log("browser")
        if e["source"] == "security" and "has been blocked" in e["message"]
    )
    return [
        u
        for u in entries
        if not u.startswith(base) and not u.startswith("data:") and u not in refused
    ]


def _wait(driver, condition, timeout: float = 30):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)


def _shoot(driver, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SHOTS / name))


def _login(driver, base: str, path: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(base + path)
    driver.find_element(By.NAME, "username").send_keys(ADMIN[0])
    driver.find_element(By.NAME, "password").send_keys(ADMIN[1])
    driver.find_element(By.CSS_SELECTOR, "[type=submit]").click()


def test_make_run_prints_the_api_its_docs_the_admin_and_health(stack):
    paths = {u.split(str(stack["base"]), 1)[1] for u in stack["urls"]}
    assert {"/api/", "/api/docs/", "/api/redoc/", "/admin/", "/healthz"} <= paths


def test_every_url_make_run_prints_renders_offline(stack, browser):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By

    base = stack["base"]
    for url in stack["urls"]:
        browser.get(url)
        _wait(browser, lambda d: d.execute_script("return document.readyState") == "complete")
        try:  # pages that render with JavaScript (the docs) get a few seconds
            _wait(browser, lambda d: d.find_element(By.TAG_NAME, "body").text.strip(), 15)
        except TimeoutException:
            logs = browser.get_log("browser")
            pytest.fail(f"{url} is a blank page; console: {logs}")
        body = browser.find_element(By.TAG_NAME, "body").text
        assert "Page not found" not in browser.title and "Not Found" not in body[:200], url
        assert _same_origin_resources(browser, base) == [], url
    browser.get(base + "/api/")
    assert "Api Root" in browser.title or "API" in browser.title
    links = {a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "a")}
    assert any(link and link.endswith("/api/feed/") for link in links)


def _operations(base: str) -> int:
    schema = _api(base, "GET", "/api/schema/?format=json")["json"]
    methods = {"get", "post", "put", "patch", "delete"}
    return sum(1 for item in schema["paths"].values() for m in item if m in methods)


def test_swagger_ui_and_redoc_list_every_operation(stack, browser):
    from selenium.webdriver.common.by import By

    base = stack["base"]
    expected = _operations(base)
    assert expected >= 15
    browser.get(base + "/api/docs/")
    _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) >= expected)
    assert len(browser.find_elements(By.CSS_SELECTOR, ".opblock")) == expected
    assert _same_origin_resources(browser, base) == []
    _shoot(browser, "docs.png")
    browser.get(base + "/api/redoc/")
    ops = '[data-section-id^="operation/"]'
    _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, ops)) >= expected)
    assert len(browser.find_elements(By.CSS_SELECTOR, ops)) == expected
    assert _same_origin_resources(browser, base) == []


def test_admin_login_fanout_progress_and_a_feed_settings_change(stack, seeded, browser):
    from selenium.webdriver.common.by import By

    base = stack["base"]
    _login(browser, base, "/admin/login/")
    _wait(browser, lambda d: "Site administration" in d.page_source)
    # The fan-out jobs of the seeded activities: a progress bar each, all done.
    browser.get(base + "/admin/feeds/fanoutjob/")
    bars = browser.find_elements(By.CSS_SELECTOR, ".fanout-progress")
    assert len(bars) >= 6
    assert all("1 done, 0 failed of 1" in bar.get_attribute("title") for bar in bars[:6])
    assert browser.find_elements(By.CSS_SELECTOR, "#changelist-filter")  # filter by state
    _shoot(browser, "admin-fanout.png")
    # A FeedSettings change, saved and shown again.
    browser.get(base + "/admin/feeds/feedsettings/")
    browser.find_element(By.CSS_SELECTOR, "#result_list tbody a").click()
    field = browser.find_element(By.NAME, "follow_backfill_count")
    field.clear()
    field.send_keys("37")
    browser.find_element(By.NAME, "_save").click()
    _wait(browser, lambda d: "was changed successfully" in d.page_source)
    browser.find_element(By.CSS_SELECTOR, "#result_list tbody a").click()
    assert browser.find_element(By.NAME, "follow_backfill_count").get_attribute("value") == "37"


def test_browsable_feed_links_to_its_next_page(stack, seeded, browser):
    from selenium.webdriver.common.by import By

    base = stack["base"]
    # An API client: the JSON body as it is, and the next page in a Link header.
    page = _api(base, "GET", "/api/feed/?limit=2", token=seeded["admin_token"])
    assert set(page["json"]) == {"items", "next_cursor"}
    cursor = page["json"]["next_cursor"]
    link = next_link(page["headers"]["Link"])
    assert link and parse_qs(urlsplit(link).query) == {"limit": ["2"], "cursor": [cursor]}
    # The browsable API, logged in with the session: a link to click.
    browser.delete_all_cookies()
    _login(browser, base, "/api-auth/login/?next=/api/feed/%3Flimit%3D2")
    _wait(browser, lambda d: "/api/feed/" in d.current_url and "next_cursor" in d.page_source)
    first = browser.find_element(By.CSS_SELECTOR, ".response-info").text
    link = browser.find_element(By.CSS_SELECTOR, "a[rel=next]")
    assert "cursor=" in link.get_attribute("href")
    link.click()
    _wait(browser, lambda d: "cursor=" in d.current_url)
    second = browser.find_element(By.CSS_SELECTOR, ".response-info").text
    first_ids, second_ids = (
        {item["id"] for item in json.loads(text[text.index("\n{") :])["items"]}
        for text in (first, second)
    )
    assert len(first_ids) == 2 and second_ids and not first_ids & second_ids  # the next page
