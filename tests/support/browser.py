"""Headless Chromium for the dashboard tests: the Debian ``chromium`` driven through
``chromium-driver`` by selenium; nothing is downloaded (the driver path is given, so
Selenium Manager never runs).

Selenium's calls block, so :class:`Browser` runs each one in a worker thread: the
orchestrator under test shares the test's event loop and keeps serving meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

_CLICK_TRIES = 5

__all__ = ["CHROMEDRIVER", "CHROMIUM", "MISSING", "Browser", "headless_chromium", "missing"]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
MISSING = (
    "chromium or chromium-driver is not installed: the dashboard tests drive the system "
    "browser. `make test` installs the Debian packages chromium and chromium-driver; "
    "by hand: apt-get install chromium chromium-driver"
)

T = TypeVar("T")


def _driver_path() -> str:
    return shutil.which("chromedriver") or CHROMEDRIVER


def missing() -> bool:
    """Whether the browser or its driver is absent."""
    return not (Path(CHROMIUM).is_file() and Path(_driver_path()).is_file())


class Browser:
    """One headless Chromium window; every call runs off the event loop."""

    def __init__(self, driver: webdriver.Chrome) -> None:
        self.driver = driver

    async def run(self, call: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(call, *args)

    async def open(self, url: str) -> None:
        await self.run(self.driver.get, url)

    async def script(self, source: str, *args: Any) -> Any:
        return await self.run(self.driver.execute_script, source, *args)

    async def texts(self, css: str) -> list[str]:
        """The text of every element matching ``css`` (one round trip)."""
        found = await self.script(
            "return [...document.querySelectorAll(arguments[0])].map(e => e.textContent)", css
        )
        return [str(text) for text in found]

    async def visible(self, css: str) -> bool:
        return bool(
            await self.script(
                "const e = document.querySelector(arguments[0]);"
                "return !!e && e.offsetParent !== null;",
                css,
            )
        )

    async def click(self, css: str) -> None:
        """Click the element matching ``css``; found again if the live page re-rendered
        it between the lookup and the click (a stale element)."""

        def click() -> None:
            for attempt in range(_CLICK_TRIES):
                try:
                    self.driver.find_element(By.CSS_SELECTOR, css).click()
                    return
                except StaleElementReferenceException:
                    if attempt == _CLICK_TRIES - 1:
                        raise
                    time.sleep(0.05)

        await self.run(click)

    async def type(self, css: str, text: str) -> None:
        def type_text() -> None:
            field = self.driver.find_element(By.CSS_SELECTOR, css)
            field.clear()
            field.send_keys(text)

        await self.run(type_text)

    async def select(self, css: str, value: str) -> None:
        await self.script(
            "const s = document.querySelector(arguments[0]); s.value = arguments[1];", css, value
        )

    async def console_errors(self) -> list[str]:
        """The browser console's SEVERE entries since the last call."""
        entries = await self.run(self.driver.get_log, "browser")
        return [str(e["message"]) for e in entries if e.get("level") == "SEVERE"]

    async def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        saved = await self.run(self.driver.save_screenshot, str(path))
        assert saved, path


def _start(width: int, height: int) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # the tests run as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-extensions",
        "--no-first-run",
        f"--window-size={width},{height}",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(_driver_path()))
    # --window-size sizes the window: grow it so that the page itself is width × height
    extra = driver.execute_script(
        "return [window.outerWidth - window.innerWidth, window.outerHeight - window.innerHeight]"
    )
    driver.set_window_size(width + int(extra[0]), height + int(extra[1]))
    return driver


@contextlib.asynccontextmanager
async def headless_chromium(width: int = 1440, height: int = 900) -> AsyncIterator[Browser]:
    """A started headless Chromium, quit on exit."""
    driver = await asyncio.to_thread(_start, width, height)
    try:
        yield Browser(driver)
    finally:
        await asyncio.to_thread(driver.quit)
