"""Headless Chromium for the browser tests, driven by Playwright for Python (a test-only dependency,
``requirements-dev.txt``) with the system's Chromium (Debian's ``chromium``) through ``executable_path``;
no browser is downloaded.

``Chromium`` is a context manager that starts Playwright and the browser and closes both on exit;
``Chromium.page()`` gives a :class:`Page` with what the tests need: evaluate JavaScript, wait for a
condition, navigate, take a screenshot, and the console messages and uncaught exceptions seen so far.
Every wait is bounded. Importable without ComfyUI, Chromium or Playwright (it is imported on start).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
"""Executables looked up on ``PATH`` (after ``$CHROMIUM_PATH``)."""

LAUNCH_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


class BrowserError(RuntimeError):
    """Chromium did not start, or page JavaScript threw."""


def find_chromium(environ: Mapping[str, str] = os.environ) -> str | None:
    """Path of a Chromium executable: ``$CHROMIUM_PATH`` if set (and executable), else the first on ``PATH``."""
    explicit = environ.get("CHROMIUM_PATH", "").strip()
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass(frozen=True)
class ConsoleEntry:
    """A console message (``level``: log, warning, error, ...) or an uncaught exception (``exception``)."""

    level: str
    text: str


@dataclass
class Page:
    """One Playwright page, with the console recorded from the moment it opened."""

    page: Any
    console: list[ConsoleEntry] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.page.on("console", lambda message: self.console.append(ConsoleEntry(message.type, message.text)))
        self.page.on("pageerror", lambda error: self.console.append(ConsoleEntry("exception", str(error))))

    def console_tail(self, count: int = 20) -> str:
        return "\n".join(f"[{entry.level}] {entry.text[:500]}" for entry in self.console[-count:])

    def evaluate(self, expression: str, timeout: float = 30.0) -> Any:
        """Value of a JavaScript expression (promises awaited), as JSON; raises ``BrowserError`` if it throws
        or ``TimeoutError`` when it has not settled after ``timeout`` s."""
        from playwright.sync_api import Error

        bounded = (
            "Promise.race([Promise.resolve(" + expression + "), new Promise((_, reject) => setTimeout("
            f"() => reject(new Error('__cvx_timeout__')), {int(timeout * 1000)}))])"
        )
        try:
            return self.page.evaluate(bounded)
        except Error as error:
            if "__cvx_timeout__" in str(error):
                raise TimeoutError(f"`{expression[:200]}` did not settle within {timeout:.0f} s") from None
            raise BrowserError(f"page JavaScript threw: {error}\nexpression: {expression[:300]}") from None

    def wait_for(self, expression: str, timeout: float = 30.0, interval: float = 0.25) -> Any:
        """Poll ``expression`` until it is truthy and return its value; ``TimeoutError`` after ``timeout`` s."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        try:
            handle = self.page.wait_for_function(
                expression, timeout=timeout * 1000, polling=int(interval * 1000)
            )
        except PlaywrightTimeout:
            raise TimeoutError(
                f"waited {timeout:.0f} s for `{expression[:200]}`; console:\n" + self.console_tail()
            ) from None
        return handle.json_value()

    def navigate(self, url: str, timeout: float = 30.0) -> None:
        """Open ``url`` and wait (bounded) until the document has loaded."""
        self.page.goto(url, timeout=timeout * 1000, wait_until="load")

    def screenshot(self, path: Path) -> Path:
        """Write a PNG of the viewport to ``path``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(path), timeout=60_000)
        return path


class Chromium:
    """Headless Chromium through Playwright; ``with Chromium(path) as browser: page = browser.page()``."""

    def __init__(
        self, executable: str, *, width: int = 1600, height: int = 1000, startup_timeout: float = 30.0
    ):
        self.executable = executable
        self.width = width
        self.height = height
        self.startup_timeout = startup_timeout
        self._playwright = None
        self._browser = None

    def start(self) -> Chromium:
        from playwright.sync_api import Error, sync_playwright

        self._playwright = sync_playwright().start()
        try:
            self._browser = self._playwright.chromium.launch(
                executable_path=self.executable,
                headless=True,
                args=list(LAUNCH_FLAGS),
                timeout=self.startup_timeout * 1000,
            )
        except Error as error:
            self.kill()
            raise BrowserError(f"Chromium ({self.executable}) did not start: {error}") from None
        return self

    def page(self) -> Page:
        """A new page with the viewport set and its console recorded."""
        if self._browser is None:
            raise BrowserError("Chromium is not running; call start() first")
        return Page(self._browser.new_page(viewport={"width": self.width, "height": self.height}))

    def kill(self) -> None:
        """Close the browser and stop Playwright. Safe twice."""
        browser, self._browser = self._browser, None
        if browser is not None:
            browser.close()
        playwright, self._playwright = self._playwright, None
        if playwright is not None:
            playwright.stop()

    def __enter__(self) -> Chromium:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.kill()
