"""A real headless browser for tests: Debian's `chromium`, driven over the DevTools
protocol (one page, through the `websockets` client the publisher already depends on).

    with Browser.start(tmp_path) as browser:
        browser.goto(url)
        browser.evaluate("document.title")
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect

from natrelay_infra.children import stop_child


def chromium() -> str | None:
    """The chromium binary, if this machine has one."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    def __init__(self, process: subprocess.Popen[bytes], page: ClientConnection) -> None:
        self.process = process
        self._page = page
        self._ids = itertools.count(1)
        self._events: list[dict[str, Any]] = []

    @classmethod
    @contextmanager
    def start(cls, workdir: Path, timeout: float = 30) -> Iterator[Browser]:
        binary = chromium()
        assert binary is not None, "chromium is not installed (apt-get install chromium)"
        log = workdir / "chromium.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [
                    binary,
                    "--headless=new",
                    "--no-sandbox",  # root in CI, in a container
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--no-default-browser-check",
                    "--remote-debugging-address=127.0.0.1",
                    "--remote-debugging-port=0",
                    f"--user-data-dir={workdir / 'profile'}",
                    "about:blank",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=sink,
                start_new_session=True,
            )
        try:
            port = _devtools_port(log, process, timeout)
            targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
            page_url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
            with connect(page_url, max_size=16 * 1024 * 1024, open_timeout=timeout) as page:
                browser = cls(process, page)
                browser.call("Page.enable")
                browser.call("Network.enable")
                yield browser
        finally:
            stop_child(process, timeout=10)
            with contextlib.suppress(ProcessLookupError):  # its helpers, in its session
                os.killpg(process.pid, signal.SIGKILL)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """One DevTools command; its result (events that come meanwhile are kept)."""
        msg_id = next(self._ids)
        self._page.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            message = json.loads(self._page.recv(timeout=30))
            if message.get("id") == msg_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))
            if "method" in message:
                self._events.append(message)

    def _wait_event(self, method: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self._events):
                if event["method"] == method:
                    return self._events.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {method} within {timeout} s")
            message = json.loads(self._page.recv(timeout=left))
            if "method" in message:
                self._events.append(message)

    def goto(self, url: str) -> None:
        """Open `url` and wait until it has loaded."""
        self._events.clear()
        self.call("Page.navigate", url=url)
        self._wait_event("Page.loadEventFired")

    def submit(self, script: str) -> None:
        """Run `script` (which submits a form) and wait for the next page to load."""
        self._events.clear()
        self.evaluate(script)
        self._wait_event("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def text(self) -> str:
        return str(self.evaluate("document.body.innerText"))

    def cookies(self, url: str) -> list[dict[str, Any]]:
        return list(self.call("Network.getCookies", urls=[url])["cookies"])

    def screenshot(self, path: Path, *, width: int = 1280, height: int = 900) -> Path:
        """Save the whole page, laid out `width` CSS pixels wide (a phone below 700), as a
        PNG at `path`."""
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=width < 700,
        )
        tall = self.evaluate("document.documentElement.scrollHeight")
        shot = self.call(
            "Page.captureScreenshot",
            format="png",
            captureBeyondViewport=True,
            clip={"x": 0, "y": 0, "width": width, "height": min(int(tall), 8000), "scale": 1},
        )
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def requests_seen(self) -> list[str]:
        """URLs the page requested since the last navigation (from Network events)."""
        return [
            e["params"]["request"]["url"]
            for e in self._events
            if e["method"] == "Network.requestWillBeSent"
        ]


def _devtools_port(log: Path, process: subprocess.Popen[bytes], timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", log.read_text())
        if match:
            return int(match.group(1))
        if process.poll() is not None:
            raise RuntimeError(f"chromium exited ({process.returncode}): {log.read_text()}")
        time.sleep(0.05)
    raise TimeoutError(f"chromium did not start within {timeout} s: {log.read_text()}")
