"""The progress bar of a sweep's driver."""

from __future__ import annotations

import sys


class CellProgress:
    """One bar over the cells to run, with done / running / failed counts and tqdm's ETA."""

    def __init__(self, total: int, enabled: bool) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc="sweep", unit="cell", disable=not enabled, file=sys.stderr,
                        dynamic_ncols=True, mininterval=0.5)
        self.done = self.failed = self.retried = self.running = 0
        self._shown = ""

    def finished(self, status: str) -> None:
        if status == "complete":
            self.done += 1
        else:
            self.failed += 1
        self.bar.set_postfix_str(self._text(self.running), refresh=False)
        self.bar.update(1)

    def _text(self, running: int) -> str:
        text = f"done {self.done}, running {running}, failed {self.failed}"
        return text + (f", retried {self.retried}" if self.retried else "")

    def show(self, running: int) -> None:
        self.running = running
        text = self._text(running)
        if text != self._shown:  # redraw on news only: a log file gets a line per change, not per second
            self._shown = text
            self.bar.set_postfix_str(text, refresh=True)

    def close(self) -> None:
        self.bar.close()
