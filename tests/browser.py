"""Headless Chromium for the review-page tests (Debian's ``chromium`` + ``chromium-driver``).

Nothing is downloaded: selenium gets the driver and browser paths explicitly, so its
Selenium Manager never goes online. The network is also blocked at the browser (a dead
proxy and a resolver that finds nothing), and every request is logged so a test can
prove the page made none.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

CHROMIUM = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
DRIVERS = ("chromedriver", "/usr/lib/chromium/chromedriver", "/usr/bin/chromedriver")


def find_browser() -> tuple[str | None, str | None]:
    browser = next((p for p in map(shutil.which, CHROMIUM) if p), None)
    driver = next((p for p in map(shutil.which, DRIVERS) if p), None)
    return browser, driver


def missing_reason() -> str | None:
    browser, driver = find_browser()
    if browser and driver:
        return None
    what = " and ".join(n for n, p in (("chromium", browser), ("chromedriver", driver)) if not p)
    return (f"{what} not found; install Debian's chromium and chromium-driver "
            "(`make test` does this when run as root with apt-get)")


def start(download_dir: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = find_browser()
    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000",
                "--proxy-server=http://127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND",
                "--disable-background-networking", "--no-first-run", "--disable-sync", "--disable-extensions"):
        opts.add_argument(arg)
    opts.binary_location = str(browser)
    opts.add_experimental_option("prefs", {"download.default_directory": str(download_dir),
                                           "download.prompt_for_download": False})
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    d = webdriver.Chrome(options=opts, service=Service(str(driver), log_output=os.devnull))
    d.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(download_dir)})
    d.download_dir = str(download_dir)
    return d


def requested_urls(driver) -> list[str]:
    """Every URL the browser asked for since the last call (CDP Network events)."""
    urls = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
    return urls


def click(driver, element, timeout: float = 20.0) -> None:
    """Click like a user: scroll the element to the middle of the viewport (never under the sticky
    toolbar), wait until it is displayed and enabled and nothing else covers its centre, then click.

    A bare ``element.click()`` fails with "element click intercepted" when the page is still
    laying out or the element sits under the toolbar; under a loaded machine that is a flake.
    """
    from selenium.common.exceptions import ElementClickInterceptedException
    from selenium.webdriver.support.ui import WebDriverWait

    def ready(d) -> bool:
        d.execute_script("arguments[0].scrollIntoView({block: 'center', inline: 'center'});", element)
        on_top = d.execute_script(
            "const r = arguments[0].getBoundingClientRect();"
            "const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);"
            "return hit !== null && (hit === arguments[0] || arguments[0].contains(hit));", element)
        if not (element.is_displayed() and element.is_enabled() and on_top):
            return False
        try:
            element.click()
        except ElementClickInterceptedException:
            return False
        return True

    WebDriverWait(driver, timeout, poll_frequency=0.05).until(ready, f"{element.tag_name} never became clickable")
