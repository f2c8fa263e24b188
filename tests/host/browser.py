"""Headless Chromium driven over the DevTools protocol (CDP), on the standard library only.

No Playwright, no new dependency: Chromium is started with ``--remote-debugging-port=0`` (it writes
the port it chose into ``DevToolsActivePort`` in its profile folder), the page target's websocket
comes from ``/json/list``, and CDP commands travel over the pack's own stdlib websocket client
(``customvideox_core.batch.websocket``).

Every wait is bounded; ``Chromium`` is a context manager that kills the whole process group and
deletes its temporary profile on exit. Importable without ComfyUI and without Chromium.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import stop_process_group

from customvideox_core.batch.websocket import WebSocketConnection

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
"""Executables looked up on ``PATH`` (after ``$CHROMIUM_PATH``)."""

LAUNCH_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--hide-scrollbars",
    "--mute-audio",
)


class BrowserError(RuntimeError):
    """Chromium did not start, a CDP command failed, or page JavaScript threw."""


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
    """A console message or uncaught exception seen on the page."""

    level: str
    text: str


@dataclass
class CdpPage:
    """One page target: send CDP commands, evaluate JavaScript, wait for conditions, take screenshots."""

    connection: WebSocketConnection
    console: list[ConsoleEntry] = field(default_factory=list)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def send(self, method: str, params: Mapping[str, Any] | None = None, timeout: float = 30.0) -> dict:
        """Send one command and return its ``result``; events arriving meanwhile are recorded."""
        command_id = next(self._ids)
        self.connection.send_text(
            json.dumps({"id": command_id, "method": method, "params": dict(params or {})})
        )
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            message = self.connection.receive(timeout=max(remaining, 0.0)) if remaining > 0 else None
            if message is None:
                raise TimeoutError(f"CDP {method} got no answer within {timeout:.0f} s")
            payload = json.loads(message)
            if payload.get("id") == command_id:
                if "error" in payload:
                    raise BrowserError(f"CDP {method} failed: {payload['error']}")
                return payload.get("result", {})
            self._record_event(payload)

    def _record_event(self, payload: dict) -> None:
        method = payload.get("method")
        params = payload.get("params", {})
        if method == "Runtime.consoleAPICalled":
            text = " ".join(
                str(arg.get("value", arg.get("description", ""))) for arg in params.get("args", [])
            )
            self.console.append(ConsoleEntry(params.get("type", "log"), text))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text", "")
            self.console.append(ConsoleEntry("exception", text))

    def console_tail(self, count: int = 20) -> str:
        return "\n".join(f"[{entry.level}] {entry.text[:500]}" for entry in self.console[-count:])

    def evaluate(self, expression: str, timeout: float = 30.0) -> Any:
        """Value of a JavaScript expression (promises awaited), as JSON; raises ``BrowserError`` if it throws."""
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
            timeout=timeout,
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text", "")
            raise BrowserError(f"page JavaScript threw: {text}\nexpression: {expression[:300]}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 30.0, interval: float = 0.25) -> Any:
        """Poll ``expression`` until it is truthy and return its value; ``TimeoutError`` after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = self.evaluate(expression, timeout=max(deadline - time.monotonic(), 1.0))
            if value:
                return value
            time.sleep(interval)
        raise TimeoutError(
            f"waited {timeout:.0f} s for `{expression[:200]}` (last value {value!r}); console:\n"
            + self.console_tail()
        )

    def navigate(self, url: str, timeout: float = 30.0) -> None:
        """Open ``url`` and wait (bounded) until the document has loaded."""
        self.send("Page.navigate", {"url": url}, timeout=timeout)
        self.wait_for("document.readyState === 'complete'", timeout=timeout)

    def set_viewport(self, width: int, height: int) -> None:
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )

    def screenshot(self, path: Path) -> Path:
        """Write a PNG of the viewport to ``path``."""
        result = self.send("Page.captureScreenshot", {"format": "png"}, timeout=60.0)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(result["data"]))
        return path


class Chromium:
    """A headless Chromium process with a throw-away profile; ``with Chromium(path) as browser: ...``."""

    def __init__(
        self, executable: str, *, width: int = 1600, height: int = 1000, startup_timeout: float = 30.0
    ):
        self.executable = executable
        self.width = width
        self.height = height
        self.startup_timeout = startup_timeout
        self.port: int | None = None
        self._profile: Path | None = None
        self._process: subprocess.Popen | None = None
        self._log_file = None
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only
        self._pages: list[CdpPage] = []

    def start(self) -> Chromium:
        self._profile = Path(tempfile.mkdtemp(prefix="cvx-chromium-"))
        self._log_file = open(self._profile.parent / f"{self._profile.name}.log", "wb")  # noqa: SIM115 - closed in kill()
        command = [
            self.executable,
            *LAUNCH_FLAGS,
            f"--user-data-dir={self._profile}",
            f"--window-size={self.width},{self.height}",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            "about:blank",
        ]
        self._process = subprocess.Popen(
            command,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.port = self._wait_for_port()
        return self

    def _wait_for_port(self) -> int:
        port_file = self._profile / "DevToolsActivePort"
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            returncode = self._process.poll()
            if returncode is not None:
                log = self.log_tail()
                self.kill()
                raise BrowserError(f"Chromium exited during startup (code {returncode}).\n{log}")
            if port_file.exists():
                first_line = port_file.read_text(encoding="ascii", errors="replace").splitlines()[:1]
                if first_line and first_line[0].strip().isdigit():
                    return int(first_line[0])
            time.sleep(0.1)
        log = self.log_tail()
        self.kill()
        raise BrowserError(f"Chromium wrote no DevTools port within {self.startup_timeout:.0f} s.\n{log}")

    def log_tail(self, lines: int = 30) -> str:
        if self._profile is None:
            return ""
        log_path = self._profile.parent / f"{self._profile.name}.log"
        if not log_path.exists():
            return ""
        text = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        relevant = [line for line in text if "dbus" not in line]  # headless Chromium's harmless D-Bus noise
        return "\n".join(relevant[-lines:])

    def page(self, timeout: float = 15.0) -> CdpPage:
        """Attach to the first page target, with console and page events enabled and the viewport set."""
        if self.port is None:
            raise BrowserError("Chromium is not running; call start() first")
        deadline = time.monotonic() + timeout
        while True:
            with self._opener.open(f"http://127.0.0.1:{self.port}/json/list", timeout=10) as response:
                targets = json.loads(response.read())
            pages = [target for target in targets if target.get("type") == "page"]
            if pages:
                break
            if time.monotonic() > deadline:
                raise BrowserError(f"Chromium has no page target after {timeout:.0f} s: {targets}")
            time.sleep(0.2)
        connection = WebSocketConnection.connect(pages[0]["webSocketDebuggerUrl"], timeout=timeout)
        page = CdpPage(connection)
        self._pages.append(page)
        page.send("Page.enable")
        page.send("Runtime.enable")
        page.set_viewport(self.width, self.height)
        return page

    def kill(self) -> None:
        """Close the CDP connections, stop Chromium's process group and delete its profile. Safe twice."""
        for page in self._pages:
            page.connection.close()
        self._pages.clear()
        process, self._process = self._process, None
        stop_process_group(process)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._profile is not None:
            shutil.rmtree(self._profile, ignore_errors=True)
            (self._profile.parent / f"{self._profile.name}.log").unlink(missing_ok=True)
            self._profile = None

    def __enter__(self) -> Chromium:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.kill()
