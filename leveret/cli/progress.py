"""A progress bar for long runs, standard library only.

Drawn on a terminal only (``mode="auto"``, the default: when the stream is a TTY), or always
(``"always"``, used by the tests) or never (``"never"``).  It redraws at most ten times a
second on one line (carriage return, no newline) and clears that line when closed, so the
output around it stays clean::

    publish  [##########------------]  45%  4500/10000  21034/s  eta 0.3s
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from types import TracebackType
from typing import TextIO

__all__ = ["Progress", "MODES"]

MODES = ("auto", "always", "never")


class Progress:
    """A progress bar for ``total`` steps (``total=0``: an unknown total, a counter only).

    Use ``update(n)`` (steps done since the last call) or ``set(done)``; ``close()`` (or
    ``with``) clears the line.  Does nothing at all when disabled.
    """

    def __init__(self, total: int, label: str = "", *, stream: TextIO | None = None,
                 mode: str = "auto", unit: str = "") -> None:
        if mode not in MODES:
            raise ValueError(f"progress mode must be one of {', '.join(MODES)}, not {mode!r}")
        self.stream: TextIO = stream if stream is not None else sys.stderr
        self.total = max(0, total)
        self.label = label
        self.unit = unit
        self.done = 0
        if mode == "auto":
            isatty = getattr(self.stream, "isatty", None)
            self.enabled = bool(isatty and isatty()) and os.environ.get("TERM") != "dumb"
        else:
            self.enabled = mode == "always"
        self._started = time.monotonic()
        self._last_draw = 0.0
        self._drawn = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def update(self, steps: int = 1) -> None:
        self.set(self.done + steps)

    def set(self, done: int) -> None:
        self.done = done
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last_draw >= 0.1 or (self.total and done >= self.total):
            self._last_draw = now
            self._draw(now)

    def render(self, now: float | None = None, width: int | None = None) -> str:
        """The bar's text (without the carriage return)."""
        now = time.monotonic() if now is None else now
        width = width or shutil.get_terminal_size((80, 20)).columns
        elapsed = max(now - self._started, 1e-9)
        rate = self.done / elapsed
        unit = f" {self.unit}" if self.unit else ""
        if self.total:
            fraction = min(1.0, self.done / self.total)
            remaining = (self.total - self.done) / rate if rate > 0 else 0.0
            tail = (f" {fraction * 100:3.0f}%  {self.done}/{self.total}{unit}  {rate:,.0f}/s  "
                    f"eta {remaining:.1f}s")
            head = f"{self.label} " if self.label else ""
            bar_w = max(10, min(40, width - len(head) - len(tail) - 3))
            filled = int(bar_w * fraction)
            return f"{head}[{'#' * filled}{'-' * (bar_w - filled)}]{tail}"
        return f"{self.label} {self.done}{unit}  {rate:,.0f}/s  {elapsed:.1f}s"

    def _draw(self, now: float) -> None:
        width = shutil.get_terminal_size((80, 20)).columns
        text = self.render(now, width)[: max(10, width - 1)]
        self.stream.write("\r" + text + "\x1b[K")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """Clear the bar's line (when one was drawn)."""
        if self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._drawn = False
