"""The page at /debug/leakguard/ui in a real browser: headless Chromium driven through
chromedriver (WebDriver), against the running demo.

Chromium and chromedriver are Debian's (`make chromium` installs the packages `chromium` and
`chromium-driver`); CHROMIUM and CHROMEDRIVER override their paths. Nothing is downloaded by
the test. Screenshots go to target/ui-screenshots/.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Tuple

import pytest
from leakguard_e2e import LEAKED_CONNECTIONS, Demo, http
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
WAIT_S = 30.0
MiB = 2**20
GiB = 2**30


COUNT_FETCHES = """
window.leakguardTestInFlight = 0;
(function () {
  // A request counts from fetch() until the page has read its body and a task has passed
  // since (the page renders in the promise callbacks that follow, before any later task).
  var done = function () {
    window.setTimeout(function () { window.leakguardTestInFlight -= 1; }, 0);
  };
  var fetch = window.fetch.bind(window);
  window.fetch = function () {
    window.leakguardTestInFlight += 1;
    return fetch.apply(null, arguments).catch(function (e) { done(); throw e; });
  };
  var text = Response.prototype.text;
  Response.prototype.text = function () {
    var read = text.call(this);
    read.then(done, done);
    return read;
  };
})();
"""


def settled(driver: webdriver.Chrome) -> bool:
    """No request of the page is in flight."""
    return bool(driver.execute_script("return window.leakguardTestInFlight === 0"))


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            pytest.fail(f"{path} is missing: `make chromium` installs Debian's {package} (or set CHROMIUM/CHROMEDRIVER)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in CI containers
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1700",
        "--lang=en-US",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    # Count the page's requests in flight (window.leakguardTestInFlight), so that a test can
    # wait until the page is still instead of sleeping.
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": COUNT_FETCHES})
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="session")
def screenshot_dir(cargo_target_dir: Path) -> Path:
    path = cargo_target_dir / "ui-screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


def wait(driver: webdriver.Chrome, what: str, condition: Callable[[webdriver.Chrome], object]) -> object:
    try:
        return WebDriverWait(
            driver, WAIT_S, poll_frequency=0.2, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)
        ).until(condition)
    except Exception as e:  # TimeoutException: say what was awaited, with the page's state.
        notice = driver.find_element(By.ID, "notice-text").text
        pytest.fail(f"waited {WAIT_S:.0f} s for {what}: {e!r}; page notice: {notice!r}; console: {console(driver)}")


def console(driver: webdriver.Chrome) -> List[str]:
    entries: List[Dict[str, Any]] = driver.get_log("browser")  # type: ignore[no-untyped-call]
    return [f"{e['level']}: {e['message']}" for e in entries]


def series(driver: webdriver.Chrome, name: str) -> WebElement:
    return driver.find_element(By.CSS_SELECTOR, f'#chart [data-series="{name}"]')


def rss_points(driver: webdriver.Chrome) -> int:
    # Read in one script: the page redraws the chart at every refresh, and an element found in
    # one call may be gone by the next.
    points = driver.execute_script(
        "var e = document.querySelector('#chart [data-series=\"rss\"]');"
        " return e ? Number(e.getAttribute('data-points')) : 0;"
    )
    return int(points)


def path_points(d: str) -> List[Tuple[float, float]]:
    return [(float(x), float(y)) for x, y in re.findall(r"[ML](-?[\d.]+),(-?[\d.]+)", d)]


def line_y(driver: webdriver.Chrome, name: str) -> float:
    return float(series(driver, name).get_attribute("y1") or "nan")


def cells(row: WebElement) -> List[str]:
    return [td.text for td in row.find_elements(By.TAG_NAME, "td")]


def test_page_draws_the_history_and_tables_of_the_running_demo(
    leaking_demo: Demo, browser: webdriver.Chrome, screenshot_dir: Path
) -> None:
    browser.get(f"{leaking_demo.base_url}/debug/leakguard/ui")
    wait(browser, "the RSS line with 10 points", lambda d: rss_points(d) >= 10)
    wait(browser, "the trend and the projection", lambda d: series(d, "projection") and series(d, "trend"))
    # Hold the page still while it is read: refresh off, and any request in flight landed.
    Select(browser.find_element(By.ID, "refresh")).select_by_value("0")
    wait(browser, "no request in flight", settled)
    report = leaking_demo.report()

    # Every series of the chart is drawn, with a visible extent.
    for name in ("band", "rss", "heap", "limit", "restart", "critical", "warn", "trend", "projection"):
        extent = browser.execute_script(
            "var b = arguments[0].getBBox(); return b.width + b.height;", series(browser, name)
        )
        assert extent > 10, (name, extent)
    rss = series(browser, "rss")
    points = path_points(rss.get_attribute("d") or "")
    assert len(points) == int(rss.get_attribute("data-points") or 0)
    assert all(a[0] < b[0] for a, b in zip(points, points[1:])), "time goes right"

    # The lines sit at their values: y is linear in bytes, the limit highest, then restart,
    # critical, warn; and the newest RSS point at the resident size the page shows (from the
    # report it fetched with this history).
    limit = report["limit"]
    assert limit["bytes"] == GiB
    y_limit, y_warn = line_y(browser, "limit"), line_y(browser, "warn")
    assert y_limit < line_y(browser, "restart") < line_y(browser, "critical") < y_warn
    px_per_byte = (y_warn - y_limit) / (limit["bytes"] - limit["warn_bytes"])
    shown = browser.find_element(By.ID, "c-rss").text
    match = re.fullmatch(r"([\d.]+) MiB", shown)
    assert match, shown
    resident = float(match.group(1)) * MiB
    expected_y = y_limit + px_per_byte * (limit["bytes"] - resident)
    tolerance = px_per_byte * 0.01 * limit["bytes"]  # 1% of the limit
    assert abs(points[-1][1] - expected_y) < tolerance, (points[-1], expected_y, shown)
    assert "limit 1.0 GiB" in browser.find_element(By.CSS_SELECTOR, "#chart .label-limit").text

    # The projection rises towards the limit and says when it gets there.
    projection = path_points(series(browser, "projection").get_attribute("d") or "")
    assert projection[-1][1] < projection[0][1], projection
    assert browser.find_element(By.CSS_SELECTOR, "#chart .label-oom").text.startswith("OOM ")

    # The verdict, the attribution, the state.
    assert browser.find_element(By.ID, "verdict-line").text.startswith("Leak suspected (")
    assert "the limit is reached in" in browser.find_element(By.ID, "verdict-line").text
    assert browser.find_element(By.ID, "attribution").text.startswith("RSS +")
    assert browser.find_element(By.ID, "state").text.lower() == report["state"]
    assert browser.find_element(By.ID, "c-limit").text == "1.0 GiB"
    assert browser.find_element(By.ID, "c-oom").text.startswith("in ")

    # Handles: the leaked upstream connections, with where they were opened.
    upstream = browser.find_element(By.CSS_SELECTOR, '#handles tr[data-kind="upstream_conn"]')
    assert cells(upstream)[1] == str(LEAKED_CONNECTIONS), cells(upstream)
    site = upstream.find_element(By.XPATH, "following-sibling::tr[1]")
    assert "open_upstream_conn" in site.text, site.text
    browser.find_element(By.CSS_SELECTOR, '#handles tr[data-kind="http_conn"]')
    assert "socket" in browser.find_element(By.ID, "os").text

    # Caches: the demo's page cache, filling.
    pages = cells(browser.find_element(By.CSS_SELECTOR, '#caches tr[data-cache="pages"]'))
    assert int(pages[1]) > 0, pages
    assert pages[3] == "256.0 MiB", pages

    # Restart state and recent events.
    restart = browser.find_element(By.ID, "restart").text
    assert "restarts 0" in restart and "last restart never" in restart, restart
    kinds = [cells(r)[2] for r in browser.find_elements(By.CSS_SELECTOR, "#events tr.event")]
    assert "started" in kinds and "leak_suspected" in kinds, kinds

    shot = screenshot_dir / "leakguard-ui.png"
    assert browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 20_000

    # The 24 h view draws the 1 min buckets.
    browser.find_element(By.ID, "range-coarse").click()
    wait(browser, "the 1 min history", lambda d: 1 <= rss_points(d) < 10)
    assert browser.save_screenshot(str(screenshot_dir / "leakguard-ui-24h.png"))
    browser.find_element(By.ID, "range-fine").click()
    wait(browser, "the 1 s history again", lambda d: rss_points(d) >= 10)

    severe = [m for m in console(browser) if m.startswith("SEVERE")]
    assert not severe, f"browser errors (a Content-Security-Policy violation shows here): {severe}"


def test_page_refreshes_itself(leaking_demo: Demo, browser: webdriver.Chrome) -> None:
    browser.get(f"{leaking_demo.base_url}/debug/leakguard/ui")
    wait(browser, "the RSS line", lambda d: rss_points(d) >= 10)
    first = rss_points(browser)
    updated = browser.find_element(By.ID, "updated").text
    # The default refresh is every 5 s; the history gains a point a second meanwhile.
    wait(browser, "a refresh with newer points", lambda d: rss_points(d) > first)
    assert browser.find_element(By.ID, "updated").text != updated


def test_page_asks_for_the_token_when_every_endpoint_needs_it(
    start_demo: Callable[..., Demo], browser: webdriver.Chrome, screenshot_dir: Path
) -> None:
    token = "s3cret-" + os.urandom(8).hex()
    demo = start_demo(LEAKGUARD_AUTH="all", LEAKGUARD_TOKEN=token, DEMO_LEAK_KIB_PER_SEC="0")
    # The data needs the token; the page itself, which holds no data, does not.
    assert http("GET", f"{demo.base_url}/debug/leakguard")[0] == 401
    assert http("GET", f"{demo.base_url}/debug/leakguard/history")[0] == 401
    assert http("GET", f"{demo.base_url}/debug/leakguard/history", token)[0] == 200
    status, headers, _ = http("GET", f"{demo.base_url}/debug/leakguard/ui")
    assert status == 200 and headers["content-type"].startswith("text/html")

    browser.get(f"{demo.base_url}/debug/leakguard/ui")
    wait(browser, "the token form", lambda d: d.find_element(By.ID, "auth").is_displayed())
    assert "LEAKGUARD_AUTH=all" in browser.find_element(By.ID, "auth-why").text
    assert rss_points(browser) == 0
    assert not browser.find_elements(By.CSS_SELECTOR, "#caches tr.cache")

    field = browser.find_element(By.ID, "token")
    submit = browser.find_element(By.CSS_SELECTOR, "#auth-form button[type=submit]")
    field.send_keys("wrong")
    submit.click()
    wait(browser, "the refusal", lambda d: "refused" in d.find_element(By.ID, "auth-why").text)
    assert rss_points(browser) == 0

    field.send_keys(token)
    submit.click()
    wait(browser, "the data, with the token", lambda d: rss_points(d) >= 1)
    wait(browser, "the form hidden", lambda d: not d.find_element(By.ID, "auth").is_displayed())
    browser.find_element(By.CSS_SELECTOR, '#caches tr[data-cache="pages"]')
    assert token not in browser.current_url
    assert browser.execute_script("return window.sessionStorage.getItem('leakguard-token')") == token

    # The page's purge button sends the token too.
    browser.find_element(By.ID, "purge").click()
    browser.switch_to.alert.accept()
    wait(browser, "the purge's answer", lambda d: d.find_element(By.ID, "action-result").text.startswith("purged: "))
    assert browser.save_screenshot(str(screenshot_dir / "leakguard-ui-token.png"))

    # Forgetting the token brings the form back.
    browser.find_element(By.ID, "forget").click()
    wait(browser, "the token form again", lambda d: d.find_element(By.ID, "auth").is_displayed())
    assert browser.execute_script("return window.sessionStorage.getItem('leakguard-token')") is None
    wait(browser, "the page's requests answered", settled)
    severe = [m for m in console(browser) if m.startswith("SEVERE") and " 401 " not in m]
    assert not severe, severe
