"""A one-line progress display for long runs: jobs done/total, steps/s, ETA.

On a terminal the line redraws in place; into a file or pipe it prints a
full line at most every ``log_every`` seconds, so CI logs stay short.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

__all__ = ["Progress", "format_duration"]


def format_duration(seconds: float | None) -> str:
    """``1:02:03`` / ``2:03``; ``?`` when unknown."""
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(round(max(0.0, seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """Renders coordinator progress figures (``Coordinator.poll()``) as one line.

    Args:
        label: Prefix, e.g. the run name.
        quiet: Print nothing.
        stream: Where to draw (stderr by default).
        log_every: Seconds between lines when the stream is not a terminal.
    """

    def __init__(self, label: str, *, quiet: bool = False, stream: TextIO | None = None,
                 log_every: float = 10.0) -> None:
        self.label = label
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.log_every = log_every
        self._last_print = 0.0
        self._width = 0
        self._started = time.monotonic()

    def line(self, status: dict[str, Any]) -> str:
        """The text of the progress line for *status*."""
        done, failed, total = status["done"], status["failed"], status["jobs"]
        rate = float(status.get("steps_per_s") or 0.0)
        remaining = status.get("steps_remaining")
        elapsed = time.monotonic() - self._started
        if remaining is not None and rate > 0:
            eta = remaining / rate
        elif done + failed > 0:
            eta = elapsed / (done + failed) * (total - done - failed)
        else:
            eta = None
        parts = [
            f"{self.label}: jobs {done + failed}/{total}",
            f"{failed} failed" if failed else None,
            f"{status['running']} running",
            f"{status['records']} steps",
            f"{rate:.1f} steps/s",
            f"ETA {format_duration(eta)}",
            f"{status['renders_pending']} renders queued" if status.get("renders_pending") else None,
        ]
        return " | ".join(p for p in parts if p)

    def update(self, status: dict[str, Any], *, final: bool = False) -> None:
        """Redraw (terminal) or log a line (otherwise, rate-limited)."""
        if self.quiet:
            return
        text = self.line(status)
        now = time.monotonic()
        if self.tty:
            pad = max(0, self._width - len(text))
            self.stream.write("\r" + text + " " * pad + ("\n" if final else ""))
            self._width = len(text)
            self.stream.flush()
        elif final or now - self._last_print >= self.log_every:
            self.stream.write(text + "\n")
            self.stream.flush()
            self._last_print = now

    def message(self, text: str) -> None:
        """Print a line of its own (not overwritten by the progress line)."""
        if self.quiet:
            return
        if self.tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self._width = 0
        self.stream.write(text + "\n")
        self.stream.flush()
