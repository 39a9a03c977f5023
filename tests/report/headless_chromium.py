"""Load a page in headless Chromium and report console errors, over the DevTools protocol on a pipe.

``--remote-debugging-pipe`` makes Chromium read protocol commands from fd 3 and write replies and events
to fd 4 (JSON messages separated by NUL bytes), so no WebSocket client or WebDriver package is needed.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    return next((path for name in CANDIDATES if (path := shutil.which(name))), None)


@dataclass
class PageLoad:
    """What happened while a page loaded: console/log errors, warnings, values evaluated, a screenshot."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)
    screenshot: bytes = b""


def _high_fd(fd: int) -> int:
    """Move ``fd`` above 10 so that dup2 onto 3/4 in the child never aliases it."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


class _Browser:
    def __init__(self, binary: str, profile: Path):
        cmd_read, self._cmd_write = map(_high_fd, os.pipe())
        self._event_read, event_write = map(_high_fd, os.pipe())

        def wire_pipes() -> None:  # runs in the child before exec
            os.dup2(cmd_read, 3)
            os.dup2(event_write, 4)

        self.process = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-extensions", "--hide-scrollbars", "--remote-debugging-pipe",
             f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=wire_pipes, close_fds=False,
        )
        os.close(cmd_read)
        os.close(event_write)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 60.0) -> dict[str, Any]:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._cmd_write, json.dumps(message).encode() + b"\0")
        reply = self.wait(lambda m: m.get("id") == self._next_id, timeout)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def wait(self, predicate, timeout: float) -> dict[str, Any]:
        """Read messages (keeping events) until one satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                message = json.loads(raw)
                if "method" in message:
                    self.events.append(message)
                if predicate(message):
                    return message
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._event_read], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._event_read, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buffer += chunk

    def drain(self, seconds: float) -> None:
        """Collect events for a while (late console messages, image decoding)."""
        with contextlib.suppress(TimeoutError):
            self.wait(lambda m: False, seconds)

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, TimeoutError, OSError):
            self.send("Browser.close", timeout=5)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._cmd_write)
        os.close(self._event_read)


def _describe(event: dict[str, Any]) -> tuple[str, str] | None:
    """(level, text) of a console/log/exception event, or None for other events."""
    params = event.get("params", {})
    if event["method"] == "Runtime.exceptionThrown":
        details = params["exceptionDetails"]
        return "error", details.get("exception", {}).get("description") or details.get("text", "")
    if event["method"] == "Runtime.consoleAPICalled":
        text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
        level = {"error": "error", "assert": "error", "warning": "warning"}.get(params["type"])
        return (level, text) if level else None
    if event["method"] == "Log.entryAdded":
        entry = params["entry"]
        if entry["level"] in ("error", "warning"):
            return entry["level"], f"{entry.get('text', '')} {entry.get('url', '')}".strip()
    return None


def load_page(url: str, profile: Path, width: int = 1400, height: int = 3000,
              expressions: dict[str, str] | None = None, binary: str | None = None) -> PageLoad:
    """Open ``url`` at ``width``×``height``, wait for the load event, evaluate ``expressions``, screenshot."""
    browser = _Browser(binary or find_chromium(), profile)
    result = PageLoad()
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            browser.send(f"{domain}.enable", session=session)
        browser.send("Emulation.setDeviceMetricsOverride",
                     {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session)
        browser.send("Page.navigate", {"url": url}, session)
        browser.wait(lambda m: m.get("method") == "Page.loadEventFired" and m.get("sessionId") == session, 60)
        browser.drain(1.0)
        for name, expression in (expressions or {}).items():
            evaluate = {"expression": expression, "returnByValue": True}
            reply = browser.send("Runtime.evaluate", evaluate, session)
            result.values[name] = reply["result"].get("value")
        shot = browser.send("Page.captureScreenshot", {"format": "png"}, session, timeout=60)
        result.screenshot = base64.b64decode(shot["data"])
        browser.drain(0.2)
    finally:
        browser.close()
    for event in browser.events:
        described = _describe(event)
        if described:
            (result.errors if described[0] == "error" else result.warnings).append(described[1])
    return result
