"""A one-line progress bar on stderr, with no dependency.

    with Progress(total=300, label="embedding") as progress:
        for batch in batches:
            ...
            progress.update(len(batch))

draws `embedding  [##########..........]  150/300  52.1/s  0:02` and redraws it at most ten times
a second. It stays quiet when stderr is not a terminal (pipes, CI logs, tests), unless
`enabled=True` forces it on. unit="B" counts bytes and shows megabytes.
"""

import sys
import time

BAR_WIDTH = 24
REDRAW_SECONDS = 0.1


class Progress:
    """Counts work done out of `total` and draws it on `stream` (default: stderr)."""

    def __init__(self, total, label="", unit="", enabled=None, stream=None):
        self.total = max(int(total or 0), 0)
        self.label = label
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            enabled = _is_terminal(self.stream)
        self.enabled = bool(enabled)
        self.done = 0
        self.started = time.monotonic()
        self._last_draw = 0.0
        self._drawn = False

    def update(self, amount=1):
        """Add `amount` to the work done and redraw if it has been a while."""
        self.done += amount
        now = time.monotonic()
        if self.enabled and (now - self._last_draw >= REDRAW_SECONDS or self.done >= self.total):
            self._last_draw = now
            self._draw(now)

    def close(self):
        """Draw the final state and end the line (only if anything was drawn)."""
        if self.enabled and self._drawn:
            self._draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def line(self, now=None):
        """The text of the bar, e.g. 'embedding  [######..]  3/4  2.0/s  0:01'."""
        elapsed = (now if now is not None else time.monotonic()) - self.started
        fraction = min(self.done / self.total, 1.0) if self.total else 0.0
        filled = int(round(fraction * BAR_WIDTH))
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        rate = self.done / elapsed if elapsed > 0 else 0.0
        if self.unit == "B":
            counts = f"{self.done / 1e6:.1f}/{self.total / 1e6:.1f} MB"
            speed = f"{rate / 1e6:.1f} MB/s"
        else:
            counts = f"{self.done}/{self.total}{' ' + self.unit if self.unit else ''}"
            speed = f"{rate:.1f}/s"
        minutes, seconds = divmod(int(elapsed), 60)
        return f"{self.label}  [{bar}]  {counts}  {speed}  {minutes}:{seconds:02d}"

    def _draw(self, now):
        self.stream.write("\r" + self.line(now) + "\x1b[K")  # \x1b[K clears a longer old line
        self.stream.flush()
        self._drawn = True


def _is_terminal(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
