"""A real headless browser for the HTML pages fxp writes and serves: the distribution's Chromium driven by
playwright (playwright's own browser download is not reachable here). `.ci/run` installs the `chromium` package."""
from __future__ import annotations

import shutil
from contextlib import contextmanager

import pytest

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def chromium_path() -> str:
    "The system Chromium, or skip the test saying how to get it."
    for name in CHROMIUM_NAMES:
        if found := shutil.which(name):
            return found
    pytest.skip("no Chromium on PATH (apt-get install -y chromium)")


@contextmanager
def page():
    "A fresh page in headless Chromium; `page.console_errors` collects the console's errors and page errors."
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[test]' brings playwright")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        try:
            tab = browser.new_page()
            tab.console_errors = []
            tab.on("console", lambda msg: msg.type == "error" and tab.console_errors.append(msg.text))
            tab.on("pageerror", lambda exc: tab.console_errors.append(str(exc)))
            yield tab
        finally:
            browser.close()
