"""A headless Chromium driven over the DevTools protocol, for checking HTML reports offline.

Started with no network: every host resolves to nothing and a dead proxy catches the
rest, and every request the page makes is recorded, so a test can assert there were none
beyond the page itself.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websocket

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-default-apps", "--mute-audio",
         "--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND", "--remote-debugging-port=0",
         "--remote-allow-origins=*"]


@dataclass
class PageVisit:
    """What happened while a page loaded."""

    url: str
    requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)


class Browser:
    """One Chromium process; :meth:`visit` opens a page in a fresh tab."""

    def __init__(self, binary: str, profile: Path) -> None:
        self.proc = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        self.ws_url = ""
        assert self.proc.stderr is not None
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            m = re.search(r"DevTools listening on (ws://\S+)", line)
            if m:
                self.ws_url = m.group(1)
                break
            if not line and self.proc.poll() is not None:
                break
        if not self.ws_url:
            self.close()
            raise RuntimeError("chromium did not start its DevTools endpoint")
        self.port = int(re.search(r":(\d+)/", self.ws_url).group(1))  # type: ignore[union-attr]
        self._ids = itertools.count(1)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def _call(self, ws: websocket.WebSocket, method: str, params: dict[str, Any] | None = None,
              events: list[dict[str, Any]] | None = None, timeout: float = 30) -> dict[str, Any]:
        msg_id = next(self._ids)
        ws.send(json.dumps({"id": msg_id, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = json.loads(ws.recv())
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if events is not None and "method" in msg:
                events.append(msg)
        raise TimeoutError(method)

    def visit(self, path: Path, *, settle_js: str = "true", probes: dict[str, str] | None = None,
              timeout: float = 60) -> tuple[PageVisit, dict[str, Any]]:
        """Load ``path``, wait until ``settle_js`` is true, evaluate ``probes`` (name -> JS expression)."""
        browser = websocket.create_connection(self.ws_url, timeout=timeout)
        target = self._call(browser, "Target.createTarget", {"url": "about:blank"})["targetId"]
        page = websocket.create_connection(f"ws://127.0.0.1:{self.port}/devtools/page/{target}", timeout=timeout)
        events: list[dict[str, Any]] = []
        try:
            for domain in ("Page", "Runtime", "Log", "Network"):
                self._call(page, f"{domain}.enable", events=events)
            url = path.resolve().as_uri()
            self._call(page, "Page.navigate", {"url": url}, events=events)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and not any(e.get("method") == "Page.loadEventFired" for e in events):
                events.append(json.loads(page.recv()))

            def evaluate(expr: str) -> Any:
                res = self._call(page, "Runtime.evaluate", {"expression": expr, "returnByValue": True}, events=events)
                return res.get("result", {}).get("value")

            while time.monotonic() < deadline and not evaluate(settle_js):
                time.sleep(0.2)
            time.sleep(0.5)  # let late console messages arrive
            values = {name: evaluate(expr) for name, expr in (probes or {}).items()}
            self._call(browser, "Target.closeTarget", {"targetId": target})
        finally:
            page.close()
            browser.close()
        visit = PageVisit(url)
        for ev in events:
            method, params = ev.get("method"), ev.get("params", {})
            if method == "Network.requestWillBeSent":
                visit.requests.append(params["request"]["url"])
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                visit.console_errors.append(" ".join(str(a.get("value", a.get("description", "")))
                                                     for a in params.get("args", [])))
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                visit.console_errors.append(params["entry"].get("text", ""))
            elif method == "Runtime.exceptionThrown":
                visit.exceptions.append(json.dumps(params.get("exceptionDetails", {}))[:500])
            elif method == "Page.javascriptDialogOpening":
                visit.dialogs.append(params.get("message", ""))
        return visit, values


@contextlib.contextmanager
def chromium(binary: str, profile: Path) -> Iterator[Browser]:
    """A started browser, stopped on exit."""
    b = Browser(binary, profile)
    try:
        yield b
    finally:
        b.close()
