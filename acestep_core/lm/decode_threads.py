"""How many CPU threads the LM's one-token steps run on.

A one-token step streams every weight once for one or two activation rows. On an idle machine more
cores draw more memory bandwidth and split MKL's few-row products (0.6B with CFG on 2 cores: 1.4-1.9x
faster than one), but MKL's multi-threaded small GEMM waits on its barriers for the slowest thread:
as soon as another process shares the cores a step can take 10x longer. No fixed count is right on
every machine, so by default (`ACESTEP_LM_DECODE_THREADS` unset or `auto`) the steps measure it:

- the first step of a loop runs twice, on one thread and on all of the process's threads, and the two
  results must be bit-identical; where they are not (the thread count would change the song), every
  step stays on one thread, as a fixed count of 1 does;
- then the faster count runs, and from time to time one step runs on the other count to see whether
  the machine has changed (another job started or ended); the interval doubles while the choice holds.

Where the two counts give identical bits, which one runs changes the speed only, never a token.
A number in `ACESTEP_LM_DECODE_THREADS` fixes the count instead.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Optional

import torch

from ..errors import InputError

ENV = "ACESTEP_LM_DECODE_THREADS"
FIRST_PROBE = 16      # steps after the check before the other count is timed again
LONGEST_PROBE = 256   # the interval stops doubling here
SWITCH_MARGIN = 0.9   # the other count must be 10% faster to take over (timings are noisy)


def requested_threads() -> Optional[int]:
    """The fixed count `ACESTEP_LM_DECODE_THREADS` asks for, or None for `auto` / unset."""
    value = os.environ.get(ENV, "").strip().lower()
    if value in ("", "auto"):
        return None
    if value.isdigit() and int(value) > 0:
        return int(value)
    raise InputError(f"{ENV}={value!r} is not a thread count: set a whole number >= 1, or 'auto' "
                     "(or leave it unset) to let the decoder measure")


class DecodeThreads:
    """Runs one-token steps on the thread count that is fastest here and now (see module doc).

    `begin()` opens a decoding loop (sets the count, returns the count to restore), `run(step)` runs
    one step, `end(previous)` restores the caller's count. `step` must be repeatable: running it
    again overwrites what the first run wrote (the KV cache slot of the same position).
    """

    def __init__(self, fixed: Optional[int] = None):
        self.fixed = fixed
        self.most = 1
        self.current = fixed or 1
        self.seconds: dict[int, float] = {}     # thread count -> latest step time
        self._until_probe = FIRST_PROBE
        self._interval = FIRST_PROBE
        self._checked = False

    @property
    def measuring(self) -> bool:
        return self.fixed is None and self.most > 1

    def begin(self) -> int:
        previous = torch.get_num_threads()
        if self.fixed is None:
            self.most = previous
            self._checked = False
            self.current = 1
        torch.set_num_threads(self.current)
        return previous

    def end(self, previous: int) -> None:
        torch.set_num_threads(previous)

    def _timed(self, threads: int, step: Callable[[], torch.Tensor]) -> torch.Tensor:
        torch.set_num_threads(threads)
        start = time.perf_counter()
        out = step()
        self.seconds[threads] = time.perf_counter() - start
        return out

    def run(self, step: Callable[[], torch.Tensor]) -> torch.Tensor:
        if not self.measuring:
            return step()
        if not self._checked:
            return self._check(step)
        if self._until_probe > 0:
            self._until_probe -= 1
            return self._timed(self.current, step)
        other = self.most if self.current == 1 else 1
        out = self._timed(other, step)
        if self.seconds[other] < SWITCH_MARGIN * self.seconds.get(self.current, float("inf")):
            self.current, self._interval = other, FIRST_PROBE
        else:
            self._interval = min(2 * self._interval, LONGEST_PROBE)
            torch.set_num_threads(self.current)
        self._until_probe = self._interval
        return out

    def _check(self, step: Callable[[], torch.Tensor]) -> torch.Tensor:
        """First step of a loop: one thread, then all; keep all only where the bits agree."""
        self._checked = True
        one = self._timed(1, step)
        many = self._timed(self.most, step)
        if not torch.equal(one, many):
            self.current = self.fixed = 1  # this machine's kernels differ by thread count: never switch
            return self._timed(1, step)    # rewrite what the other count wrote
        self.current = self.most if self.seconds[self.most] < self.seconds[1] else 1
        torch.set_num_threads(self.current)
        self._until_probe = self._interval = FIRST_PROBE
        return one
