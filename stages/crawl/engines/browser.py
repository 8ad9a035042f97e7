"""Drive headless Chromium (selenium 4) through an engine's results.

Selenium is pointed at Debian's /usr/bin/chromedriver through ``Service`` so
Selenium Manager never reaches for the network. Result attributes are read with one
``execute_script`` per round (not one WebDriver call per element), so a page with
thousands of results costs milliseconds.
"""
from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Iterator

from stages.common.errors import StageError
from stages.crawl.config import EngineDef
from stages.crawl.engines import extract_full_url, page_url, search_url, watchdog

CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
INSTALL_HINT = "install them with: apt-get install chromium chromium-driver"
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-crash-reporter",
                  "--disable-breakpad", "--window-size=1280,900")
READ_RESULTS_JS = """
const [selector, attribute] = arguments;
return Array.from(document.querySelectorAll(selector),
  e => attribute === '#text' ? e.textContent : e.getAttribute(attribute));
"""
COUNT_JS = "return document.querySelectorAll(arguments[0]).length;"
# One scroll round. ``window.scrollTo`` alone does nothing when the results fit the window
# (thumbnails off collapse them; a first page can be short), so no scroll event fires and
# an intersection sentinel never changes state: the crawl stopped at the first page. So:
#  1. a spacer below everything makes the document scrollable; scroll to its very bottom
#     (an "end of results" sentinel leaves the viewport);
#  2. a frame later, bring the last result into view (the sentinel after it comes back: an
#     IntersectionObserver fires; a results pane with its own scrollbar scrolls too);
#  3. a frame later, remove the spacer and scroll to the bottom again, where the old code
#     left the page (for handlers that check the position later, debounced).
# Each step also dispatches a scroll event at the document (it bubbles to window) and at
# every scroll pane holding the last result, so a handler runs even when nothing could
# move. Frames are awaited with requestAnimationFrame (a timer if frames are throttled).
SCROLL_JS = """
const [selector, padId, done] = arguments;
const results = document.querySelectorAll(selector);
const last = results.length ? results[results.length - 1] : null;
const root = document.scrollingElement || document.documentElement;
const panes = [];
for (let e = last && last.parentElement; e && e !== document.body && e !== document.documentElement;
     e = e.parentElement) {
  if (['auto', 'scroll', 'overlay'].includes(getComputedStyle(e).overflowY)) panes.push(e);
}
function fire() {
  document.dispatchEvent(new Event('scroll', {bubbles: true}));
  for (const pane of panes) pane.dispatchEvent(new Event('scroll'));
}
function toBottom() {
  root.scrollTop = root.scrollHeight;
  window.scrollTo(0, root.scrollHeight);
  for (const pane of panes) pane.scrollTop = pane.scrollHeight;
  fire();
}
function afterFrame(step) {
  let ran = false;
  const go = () => { if (!ran) { ran = true; step(); } };
  requestAnimationFrame(() => requestAnimationFrame(go));
  setTimeout(go, 100);
}
let pad = document.getElementById(padId);
if (!pad && document.body) {
  pad = document.createElement('div');
  pad.id = padId;
  pad.setAttribute('aria-hidden', 'true');
}
if (pad) {
  pad.style.cssText = 'display:block;width:1px;visibility:hidden;pointer-events:none;height:'
    + (2 * window.innerHeight + 1000) + 'px';
  document.body.appendChild(pad);
}
toBottom();
afterFrame(() => {
  if (last && last.isConnected) last.scrollIntoView({block: 'center'});
  fire();
  afterFrame(() => {
    if (pad) pad.remove();
    toBottom();
    afterFrame(() => done(true));
  });
});
"""
SCROLL_PAD_ID = "kiln-scroll-pad"


@dataclass(frozen=True)
class Collected:
    page_url: str
    urls: list[str]       # full-size image URLs, page order, unique, at most count
    missing: int          # results with no readable full-size URL
    stopped: str = ""     # why the search stopped (STOP_*)


STOP_COUNT = "count reached"
STOP_END = "the engine showed its end of results"
STOP_STALE = "no new results"      # completed with the patience in scrolls or pages
STOP_LIMIT = "max_scrolls reached"


def find_chromium() -> tuple[str, str]:
    """Paths of Chromium and ChromeDriver, or a StageError saying how to install them."""
    browser = os.environ.get("KILN_CHROMIUM") or next(
        (path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)
    driver = os.environ.get("KILN_CHROMEDRIVER", CHROMEDRIVER)
    if not browser or not os.access(browser, os.X_OK):
        raise StageError(f"Chromium not found (looked for {', '.join(CHROMIUM_NAMES)}); {INSTALL_HINT}")
    if not os.access(driver, os.X_OK):
        raise StageError(f"ChromeDriver not found at {driver}; {INSTALL_HINT}")
    return browser, driver


# The watchdog (watchdog.py) makes the profile and leads a process group that ChromeDriver
# and Chromium join. It blocks on a pipe only the crawl holds; when the crawl dies, even by
# SIGKILL, the pipe closes and the watchdog kills the group, then removes the profile.
def _start_watchdog() -> tuple[subprocess.Popen, str]:
    """The watchdog and the profile it made and guards (it owns it from the first moment)."""
    guard = subprocess.Popen([sys.executable, "-I", watchdog.__file__], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    profile = guard.stdout.readline().strip()   # once read, its group (pgid = pid) exists
    if not profile:
        guard.stdin.close()
        guard.stdout.close()
        code = guard.wait()
        raise StageError(f"the browser watchdog did not start (exit {code}; its error is above)")
    return guard, profile


def _close(profile: str, guard: subprocess.Popen) -> None:
    """Normal end, the browser gone: remove the profile, then dismiss the watchdog.

    In that order, so a crawl killed halfway through the removal leaves it to the watchdog.
    """
    watchdog.remove_tree(profile)
    guard.kill()
    guard.stdin.close()
    guard.stdout.close()
    guard.wait()


def _start_driver(crawl, browser: str, driver_path: str, profile: str, group: int):
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    user_data = os.path.join(profile, watchdog.USER_DATA)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={user_data}", f"--user-agent={crawl.user_agent}"):
        options.add_argument(flag)
    if not crawl.load_images:   # full-size URLs come from markup; thumbnails are not needed
        options.add_experimental_option("prefs", {"profile.managed_default_content_settings.images": 2})
    service = Service(executable_path=driver_path,
                      popen_kw={"preexec_fn": functools.partial(os.setpgid, 0, group)},
                      env={**os.environ, "TMPDIR": os.path.join(profile, watchdog.TMP)})
    try:
        return webdriver.Chrome(service=service, options=options)
    except WebDriverException as err:
        first = (err.msg or str(err)).strip().splitlines()[0]
        raise StageError(f"cannot start Chromium {browser} with {driver_path}: {first}") from None


@contextlib.contextmanager
def open_browser(crawl) -> Iterator:
    """A headless Chromium with a fresh profile, closed (and its profile removed) on exit.

    One temp root per browser holds its profile and its own temp files (Chromium's TMPDIR).
    """
    browser, driver_path = find_chromium()
    guard, profile = _start_watchdog()
    try:
        driver = _start_driver(crawl, browser, driver_path, profile, guard.pid)
    except BaseException:
        _close(profile, guard)
        raise
    try:
        driver.set_page_load_timeout(crawl.page_load_timeout_s)
        yield driver
    finally:
        try:
            driver.quit()
        finally:
            _close(profile, guard)


def _click_first_visible(driver, selector: str) -> bool:
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By

    for element in driver.find_elements(By.CSS_SELECTOR, selector):
        try:
            if element.is_displayed():
                element.click()
                return True
        except WebDriverException:
            continue   # covered or gone: try the next match
    return False


def _read_urls(driver, engine: EngineDef) -> tuple[list[str], int]:
    """Unique full-size URLs in page order, and how many results had none."""
    raw = driver.execute_script(READ_RESULTS_JS, engine.result, engine.full_url.attribute) or []
    base = driver.current_url
    urls = [extract_full_url(value, engine.full_url, base) for value in raw]
    return list(dict.fromkeys(u for u in urls if u)), sum(u is None for u in urls)


def _ended(driver, engine: EngineDef) -> bool:
    return bool(engine.end_selector) and driver.execute_script(COUNT_JS, engine.end_selector) > 0


def _wait_for_more(driver, engine: EngineDef, before: int, wait_s: float) -> bool:
    """Poll until the page holds more than ``before`` results (True) or time runs out."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if driver.execute_script(COUNT_JS, engine.result) > before:
            return True
        if _ended(driver, engine):
            return False
        time.sleep(0.02)
    return False


def _scroll(driver, engine: EngineDef) -> None:
    """One scroll round (SCROLL_JS); a page that blocks it is still read as it stands."""
    from selenium.common.exceptions import WebDriverException

    try:
        driver.execute_async_script(SCROLL_JS, engine.result, SCROLL_PAD_ID)
    except WebDriverException:
        driver.execute_script("window.scrollTo(0, document.body.scrollHeight);")


def _scroll_results(driver, engine: EngineDef, count: int, crawl) -> str:
    """Scroll (or press "more") until ``count`` results, an end marker, or patience runs out."""
    stale = 0
    for _ in range(crawl.max_scrolls):
        found = driver.execute_script(COUNT_JS, engine.result)
        if found >= count:
            return STOP_COUNT
        if _ended(driver, engine):
            return STOP_END
        if stale >= crawl.scroll_patience:
            return f"{STOP_STALE} after {stale} scrolls"
        _scroll(driver, engine)
        if engine.more_selector:
            _click_first_visible(driver, engine.more_selector)
        stale = 0 if _wait_for_more(driver, engine, found, crawl.scroll_wait_s) else stale + 1
    return STOP_LIMIT


def collect(driver, engine: EngineDef, term: str, count: int, crawl, origin: str = "") -> Collected:
    """Search ``term`` and gather up to ``count`` full-size image URLs."""
    first_page = search_url(engine, term, origin)
    driver.get(first_page)
    if engine.consent:
        _click_first_visible(driver, engine.consent)
    if engine.more != "pages":
        stopped = _scroll_results(driver, engine, count, crawl)
        urls, missing = _read_urls(driver, engine)
        if len(urls) >= count:
            stopped = STOP_COUNT
        return Collected(first_page, urls[:count], missing, stopped)
    urls: dict[str, None] = {}
    missing = 0
    stopped = STOP_LIMIT
    for page in range(crawl.max_scrolls):
        if page:
            driver.get(page_url(engine, term, page, origin))
        found, lacking = _read_urls(driver, engine)
        new = [u for u in found if u not in urls]
        urls.update(dict.fromkeys(new))
        missing += lacking
        if len(urls) >= count:
            stopped = STOP_COUNT
        elif not new:
            stopped = f"{STOP_STALE} on page {page + 1}"
        elif _ended(driver, engine):
            stopped = STOP_END
        else:
            continue
        break
    return Collected(first_page, list(urls)[:count], missing, stopped)
