"""A headless Chromium for page tests: found on the machine, never downloaded.

Selenium's manager would fetch a browser or a driver from the internet when it cannot find one;
here both paths are given explicitly and ``SE_OFFLINE`` forbids it, so a machine without Chromium
skips the page tests instead of reaching out.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
DRIVER = "chromedriver"


def _browser_path() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def chromium_available() -> bool:
    """Whether a Chromium binary, its chromedriver and selenium are all here."""
    return (
        _browser_path() is not None
        and shutil.which(DRIVER) is not None
        and importlib.util.find_spec("selenium") is not None
    )


def why_unavailable() -> str:
    """What is missing, for a skip reason."""
    missing = []
    if _browser_path() is None:
        missing.append("a chromium binary (apt-get install chromium)")
    if shutil.which(DRIVER) is None:
        missing.append("chromedriver (apt-get install chromium-driver)")
    if importlib.util.find_spec("selenium") is None:
        missing.append("selenium (pip install selenium)")
    return "no headless browser: missing " + ", ".join(missing) if missing else ""


@contextmanager
def headless_chromium(width: int = 1280, height: int = 900) -> Iterator[Any]:
    """A headless Chromium WebDriver with a ``width`` × ``height`` window, quit on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver_path = _browser_path(), shutil.which(DRIVER)
    if browser is None or driver_path is None:
        raise RuntimeError(why_unavailable())
    os.environ["SE_OFFLINE"] = "true"  # selenium manager: never download a browser or a driver
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
        "--disable-gpu",
        "--hide-scrollbars",  # screenshots show the page, not the window
        "--disable-dev-shm-usage",  # small /dev/shm in containers
        "--disable-extensions",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-features=Translate,OptimizationHints,MediaRouter",
        f"--window-size={width},{height}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # driver.get_log("browser")
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        driver.set_window_size(width, height)
        yield driver
    finally:
        driver.quit()


def wait_for(driver: Any, predicate: str | Callable[[Any], Any], timeout: float, what: str) -> Any:
    """Polls ``predicate`` until it returns something truthy, and returns that.

    ``predicate`` is a JavaScript expression (evaluated as ``return (<predicate>)`` in the page)
    or a Python callable taking the driver. Raises an AssertionError naming ``what`` on timeout,
    with the last value seen (or the last error raised while polling).
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            if callable(predicate):
                last = predicate(driver)
            else:
                last = driver.execute_script(f"return ({predicate});")
        except Exception as error:  # the page may be mid-reload; keep polling until the deadline
            last = error
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:.1f} s waiting for {what} (last: {last!r})"
            )
        time.sleep(0.1)


def node_health(driver: Any) -> dict[str, str]:
    """``data-node`` → ``data-health`` of every element on the page that carries both."""
    pairs = driver.execute_script(
        "return Array.from(document.querySelectorAll('[data-node]'))"
        ".map(e => [e.getAttribute('data-node'), e.getAttribute('data-health')]);"
    )
    return {name: health for name, health in pairs if health is not None}
