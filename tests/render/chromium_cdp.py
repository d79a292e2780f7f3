"""A minimal Chrome DevTools Protocol client over ``--remote-debugging-pipe``.

No dependency beyond the standard library: Chromium reads JSON commands
from fd 3 and writes JSON replies and events to fd 4, each message ended by
a NUL byte. Used by the report test to load ``report.html`` from disk, wait
for every image and video, collect console errors and failed loads, and
take a screenshot.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--mute-audio",
    "--allow-file-access-from-files",
)

# Loads every lazy image, waits for images and video metadata, and reports
# what each one ended up as.
PROBE = """
(async () => {
  const imgs = Array.from(document.images);
  for (const img of imgs) img.loading = 'eager';
  await Promise.all(imgs.map(img => img.decode().catch(() => null)));
  const vids = Array.from(document.querySelectorAll('video'));
  await Promise.all(vids.map(v => new Promise(resolve => {
    if (v.readyState >= 1 || v.error) return resolve();
    v.addEventListener('loadedmetadata', resolve, {once: true});
    v.addEventListener('error', resolve, {once: true});
    v.load();
    setTimeout(resolve, 10000);
  })));
  return JSON.stringify({
    images: imgs.map(i => ({src: i.currentSrc || i.src, complete: i.complete, width: i.naturalWidth, height: i.naturalHeight})),
    videos: vids.map(v => ({src: v.currentSrc || v.src, readyState: v.readyState, error: v.error ? v.error.code : null,
                            width: v.videoWidth, height: v.videoHeight, duration: v.duration})),
    links: Array.from(document.querySelectorAll('a[href]')).map(a => a.getAttribute('href')),
    title: document.title,
  });
})()
"""


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome binary on PATH, or None."""
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


class Chromium:
    """A headless Chromium driven over the DevTools pipe (use as a context manager)."""

    def __init__(self, binary: str, *, width: int = 1400, height: int = 900) -> None:
        self.profile = tempfile.mkdtemp(prefix="simfarm-chromium-")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        def place_fds() -> None:
            # In the child: the pipe ends become fds 3 and 4 (inheritable),
            # via close-on-exec copies so that neither clobbers the other.
            a = fcntl.fcntl(to_child_r, fcntl.F_DUPFD_CLOEXEC, 10)
            b = fcntl.fcntl(from_child_w, fcntl.F_DUPFD_CLOEXEC, 10)
            os.dup2(a, 3, inheritable=True)
            os.dup2(b, 4, inheritable=True)

        args = [binary, *FLAGS, f"--user-data-dir={self.profile}", f"--window-size={width},{height}",
                "--remote-debugging-pipe", "about:blank"]
        # close_fds=False: Python's own descriptors are close-on-exec anyway,
        # and pass_fds cannot name 3 and 4 when the parent has nothing there.
        self.proc = subprocess.Popen(args, close_fds=False, preexec_fn=place_fds,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_child_r)
        os.close(from_child_w)
        self._messages: queue.Queue[dict[str, Any]] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        self.width, self.height = width, height

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self._from_child, 1 << 16)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                self._messages.put(json.loads(raw))

    def send(self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None,
             timeout: float = 30.0) -> dict[str, Any]:
        """Send a command and wait for its result (events seen meanwhile go to ``events``)."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_child, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._messages.get(timeout=max(0.01, deadline - time.monotonic()))
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method} failed: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, timeout: float = 30.0) -> dict[str, Any]:
        """Wait for the next event named *method*."""
        for event in self.events:
            if event.get("method") == method:
                self.events.remove(event)
                return event
        deadline = time.monotonic() + timeout
        while True:
            event = self._messages.get(timeout=max(0.01, deadline - time.monotonic()))
            if event.get("method") == method:
                return event
            self.events.append(event)

    def open_page(self, path: Path) -> dict[str, Any]:
        """Load *path*, wait for its media; return the probe, problems and a PNG screenshot.

        Returns:
            ``{"probe": {...}, "errors": [text, ...], "screenshot": png bytes, "full_page": png bytes}``.
        """
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page.enable", "Runtime.enable", "Log.enable"):
            self.send(domain, session=session)
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False}, session=session)
        self.send("Page.navigate", {"url": path.resolve().as_uri()}, session=session)
        self.wait_event("Page.loadEventFired")
        result = self.send("Runtime.evaluate", {"expression": PROBE, "awaitPromise": True, "returnByValue": True},
                           session=session, timeout=60.0)
        probe = json.loads(result["result"]["value"])
        time.sleep(0.2)  # let late console/log events arrive
        while not self._messages.empty():
            self.events.append(self._messages.get_nowait())
        errors = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                errors.append(f"exception: {params.get('exceptionDetails', {}).get('text')}")
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                errors.append(f"console.{params['type']}: {params.get('args')}")
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                entry = params["entry"]
                errors.append(f"log: {entry.get('text')} {entry.get('url', '')}")
        shot = self.send("Page.captureScreenshot", {"format": "png"}, session=session)
        metrics = self.send("Page.getLayoutMetrics", session=session)["cssContentSize"]
        full = self.send("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": metrics["width"], "height": min(metrics["height"], 16000), "scale": 0.5},
        }, session=session, timeout=60.0)
        return {"probe": probe, "errors": errors, "screenshot": base64.b64decode(shot["data"]),
                "full_page": base64.b64decode(full["data"])}

    def close(self) -> None:
        """Close the browser and remove its profile."""
        try:
            self.send("Browser.close", timeout=5.0)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_child, self._from_child):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
