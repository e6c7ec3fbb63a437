"""One live status line while a run goes.

On a terminal the line is rewritten in place (``\\r`` + clear to end of line), so
a ten-minute soak shows one moving line; anywhere else (a pipe, a CI log, a
test) each update is a plain line, at most one per ``interval`` seconds (0.8 s: the
client's once-a-second snapshots jitter, and a 1.0 s gate would drop some), so logs
stay readable and greppable.  ``done()`` ends the line so the next output starts
on a fresh one.
"""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, out=None, interval: float = 0.8):
        self.out = out if out is not None else sys.stdout
        try:
            self.tty = bool(self.out.isatty())
        except (AttributeError, ValueError):
            self.tty = False
        self.interval = interval
        self._last = 0.0
        self._open = False       # a \r line is on screen and not yet ended

    def update(self, text: str, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        if self.tty:
            self.out.write("\r" + text + "\x1b[K")
            self._open = True
        else:
            self.out.write(text + "\n")
        self.out.flush()

    def done(self) -> None:
        if self._open:
            self.out.write("\n")
            self.out.flush()
            self._open = False
        self._last = 0.0

    def line(self, text: str) -> None:
        """A permanent line (a result, a warning), not overwritten by the next update."""
        self.done()
        self.out.write(text + "\n")
        self.out.flush()
