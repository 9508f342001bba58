"""The try-it page in a real headless Chromium, driven over the Chrome DevTools Protocol: type an
expense, submit, and read the ranked probability bars the page draws from the runtime's answer."""
from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import websocket
from _runtime import TRAVEL, Runtime, accounts_model, save
from tests.conftest import require

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Browser:
    """A headless Chromium in its own session and profile, and one page driven over CDP."""

    def __init__(self, profile: Path) -> None:
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--no-proxy-server", f"--user-data-dir={profile}", "--remote-debugging-port=0",
             "--window-size=900,1000", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().count("\n") >= 1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise AssertionError("chromium did not open its DevTools port")
            time.sleep(0.05)
        port = int(port_file.read_text().splitlines()[0])
        with _OPENER.open(f"http://127.0.0.1:{port}/json/list", timeout=10) as answer:
            pages = [t for t in json.loads(answer.read()) if t["type"] == "page"]
        self.ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=30, suppress_origin=True)
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        message_id = next(self.ids)
        self.ws.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == message_id:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for: {expression}")

    def wait_for_event(self, matches: Any, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events:
                if matches(event):
                    return event
            self.ws.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                self.events.append(json.loads(self.ws.recv()))
            except websocket.WebSocketTimeoutException:
                pass
            finally:
                self.ws.settimeout(30)
        raise AssertionError("timed out waiting for a DevTools event")

    def close(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)


@pytest.fixture
def browser(tmp_path):
    require(CHROMIUM is not None, "chromium is not installed (apt-get install chromium)")
    profile = tmp_path / "profile"
    profile.mkdir()
    opened = Browser(profile)
    try:
        yield opened
    finally:
        opened.close()


def test_try_it_page_ranks_the_travel_account_first_for_a_taxi_expense(browser, tmp_path):
    bundle = save(tmp_path, accounts_model(), name="accounts", sample=["printer paper"])
    with Runtime(bundle, tmp_path / "runtime.log") as runtime:
        runtime.wait_ready()
        browser.send("Page.enable")
        browser.send("Emulation.setDeviceMetricsOverride", width=900, height=1000, deviceScaleFactor=1, mobile=False)
        browser.send("Page.navigate", url=runtime.url + "/")
        browser.wait_for("document.readyState === 'complete' && !!document.querySelector('#text')")
        assert browser.evaluate("document.querySelector('#text').value") == "printer paper"

        browser.evaluate("const box = document.querySelector('#text'); box.focus(); box.select(); true")
        browser.send("Input.insertText", text="taxi to conference")
        browser.evaluate("document.querySelector('#submit').click(); true")
        bars = browser.wait_for("""(() => {
            const bars = [...document.querySelectorAll('#result .bar')];
            return bars.length ? bars.map(b => [b.dataset.label, Number(b.dataset.p), b.classList.contains('top')]) : null;
        })()""")

        labels = [label for label, _, _ in bars]
        probabilities = [p for _, p, _ in bars]
        assert labels[0] == TRAVEL
        assert bars[0][2] and not any(top for _, _, top in bars[1:])
        assert probabilities == sorted(probabilities, reverse=True)
        assert 2 <= len(bars) <= 10 and probabilities[0] > 0.5
        question = browser.evaluate("document.querySelector('.question').textContent.replace(/\\s+/g, ' ').trim()")
        assert question.startswith("On which of the") and question.endswith("go?")
        assert browser.evaluate("document.querySelector('#error').textContent") == ""

        shot = tmp_path / "tryit.png"
        shot.write_bytes(base64.b64decode(browser.send("Page.captureScreenshot", format="png")["data"]))
        assert shot.stat().st_size > 10_000
        print(f"screenshot: {shot}")

        # The token field travels as a bearer token (the gateway checks it), to the relative URL.
        browser.send("Network.enable")
        browser.evaluate("document.querySelector('#token').value = 'tok-for-the-gateway'; "
                         "document.querySelector('#submit').click(); true")
        sent = browser.wait_for_event(
            lambda e: e.get("method") == "Network.requestWillBeSent"
            and e["params"]["request"]["method"] == "POST")["params"]["request"]
        assert sent["url"] == runtime.url + "/predict?proba=true"
        assert sent["headers"].get("Authorization") == "Bearer tok-for-the-gateway"

        requests = runtime.wait_events("request", lambda found: len([e for e in found if e["path"] == "/predict"]) >= 2,
                                       "the access lines of the browser's two predictions")
        browser_posts = [e for e in requests if e["path"] == "/predict"]
        assert len(browser_posts) == 2 and all(e["status"] == 200 for e in browser_posts)
        assert "tok-for-the-gateway" not in runtime.text()
