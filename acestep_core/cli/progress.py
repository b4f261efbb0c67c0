"""Progress of the long stages (LM tokens, diffusion steps, VAE tiles) on the terminal.

On a terminal each stage gets a tqdm bar; when stderr is a file or a pipe (logs, CI) each stage
prints one line when it ends, so logs stay readable.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, Optional, TextIO

ProgressFn = Callable[[int, int], None]


class StageProgress:
    """A `progress(done, total)` callback for one named stage.

    A stage may run several times (the LM's two phases, one decode per song); a call whose `done`
    goes backwards or whose total changes to a smaller value than `done` starts a new run.
    """

    def __init__(self, name: str, unit: str, stream: Optional[TextIO] = None, bar: Optional[bool] = None):
        self.name, self.unit = name, unit
        self.stream = stream if stream is not None else sys.stderr
        self.use_bar = self.stream.isatty() if bar is None else bar
        self._bar = None
        self._started: Optional[float] = None
        self._done = 0
        self._total = 0

    def __call__(self, done: int, total: int) -> None:
        done, total = int(done), max(int(total), 1)
        if self._started is not None and done < self._done:
            self.close()
        if self._started is None:
            self._started = time.perf_counter()
        self._done, self._total = done, total
        if self.use_bar:
            self._update_bar(done, total)
        if done >= total:
            self.close()

    def _update_bar(self, done: int, total: int) -> None:
        from tqdm import tqdm

        if self._bar is None:
            self._bar = tqdm(total=total, desc=self.name, unit=self.unit, file=self.stream, leave=True,
                             dynamic_ncols=True)
        if self._bar.total != total:
            self._bar.total = total
        self._bar.n = done
        self._bar.refresh()

    def close(self) -> None:
        """End the current run: close its bar, or print its one summary line."""
        if self._started is None:
            return
        seconds = time.perf_counter() - self._started
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif not self.use_bar:
            rate = f", {self._done / seconds:.1f} {self.unit}/s" if seconds >= 0.1 and self._done > 1 else ""
            print(f"{self.name}: {self._done} {self.unit} in {seconds:.1f} s{rate}", file=self.stream, flush=True)
        self._started, self._done, self._total = None, 0, 0
