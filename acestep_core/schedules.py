"""Timestep schedules of the official turbo and base/SFT samplers (docs/sampling.md#turbo-schedule).

Schedules are built in the model dtype, as the reference does: on bf16 the rounded grid values also
set the Euler step sizes (docs/sampling.md#dtype-of-the-time-grid).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from .errors import InputError

TURBO_STEPS = 8
# Base / SFT: the official code runs 30 (generate_audio), 32 (its UI) or 50 (its README) steps
# (docs/sampling.md#base-and-sft-schedule); far fewer leaves audible noise.
BASE_MIN_STEPS, BASE_MAX_STEPS = 30, 50
VALID_SHIFTS = (1.0, 2.0, 3.0)
MAX_CUSTOM_TIMESTEPS = 20


def _shifted(t: float, shift: float) -> float:
    return shift * t / (1 + (shift - 1) * t)


def turbo_table(shift: float) -> list[float]:
    grid = [1 - i / TURBO_STEPS for i in range(TURBO_STEPS)]
    return [_shifted(t, shift) for t in grid]


TURBO_SHIFT_TIMESTEPS = {s: turbo_table(s) for s in VALID_SHIFTS}
VALID_TIMESTEPS = sorted({round(t, 12) for table in TURBO_SHIFT_TIMESTEPS.values() for t in table}, reverse=True)


def nearest_turbo_shift(shift: float) -> float:
    return min(VALID_SHIFTS, key=lambda s: abs(s - shift))


def parse_timesteps(value) -> Optional[list[float]]:
    """`timesteps` as every door takes it (a comma string or a list of numbers), checked here once:
    numbers in [0, 1], strictly decreasing (the sampler steps from noise towards 0)."""
    if value is None or value == "":
        return None
    parts = [v for v in value.replace(" ", "").split(",") if v] if isinstance(value, str) else list(value)
    try:
        steps = [float(v) for v in parts]
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"timesteps must be comma-separated numbers between 0 and 1, got {value!r}") from None
    check_timesteps(steps)
    return steps


def check_timesteps(steps: Sequence[float]) -> None:
    if any(not 0.0 <= t <= 1.0 for t in steps):  # also NaN
        raise InputError(f"timesteps must lie in [0, 1], got {list(steps)}")
    if any(b >= a for a, b in zip(steps, steps[1:])):
        raise InputError(f"timesteps must be strictly decreasing (e.g. 0.97,0.5,0), got {list(steps)}")


def turbo_timesteps(shift: float, custom: Optional[Sequence[float]] = None) -> list[float]:
    """The turbo schedule (without the implicit final 0): a fixed table, or custom values snapped to it."""
    if custom:
        values = list(custom)
        while values and values[-1] == 0:
            values.pop()
        if not values:
            raise InputError("timesteps contains only zeros; give at least one value in (0, 1]")
        if any(not 0 <= v <= 1 for v in values):
            raise InputError(f"timesteps must lie in [0, 1], got {list(custom)}")
        values = values[:MAX_CUSTOM_TIMESTEPS]
        return [min(VALID_TIMESTEPS, key=lambda valid: abs(valid - v)) for v in values]
    return TURBO_SHIFT_TIMESTEPS[nearest_turbo_shift(shift)]


def turbo_note(steps: Optional[int], shift: float, custom, use_adg: bool = False) -> Optional[str]:
    """What a turbo DiT did not use of the request (its 8-step tables fix the steps and snap the
    shift), as one line for the user; None when it ran exactly what was asked."""
    unused = ["use_adg was not used (turbo runs without guidance)"] if use_adg else []
    if not custom and steps is not None and steps != TURBO_STEPS:
        unused.append(f"inference_steps {steps} was not used")
    used = nearest_turbo_shift(shift)
    if not custom and shift != used:
        unused.append(f"shift {shift:g} ran as {used:g}")
    if not unused:
        return None
    return (f"the turbo DiT runs its fixed {TURBO_STEPS}-step schedule without guidance (shift 1, 2 or 3): "
            + "; ".join(unused)
            + ". Use a base / sft DiT for other step counts, or pass timesteps")


def few_steps_note(steps: Optional[int]) -> Optional[str]:
    """One line for the user when a base / SFT DiT is asked for fewer steps than it is made for
    (turbo's 8, e.g.); None otherwise."""
    if steps is None or steps >= BASE_MIN_STEPS:
        return None
    return (f"inference_steps {steps} is few for a base / sft DiT, which is made for {BASE_MIN_STEPS}-{BASE_MAX_STEPS} "
            f"steps (turbo's fixed schedule is {TURBO_STEPS}); expect a noisier result, or raise steps")


def turbo_schedule(shift: float, custom, dtype: torch.dtype, device) -> torch.Tensor:
    """Turbo: the table values then 0, in the model dtype."""
    values = turbo_timesteps(shift, custom)
    return torch.cat([torch.tensor(values, dtype=dtype, device=device), torch.zeros(1, dtype=dtype, device=device)])


def base_schedule(steps: int, shift: float, dtype: torch.dtype, device) -> torch.Tensor:
    """Base / SFT: linspace(1, 0, steps+1), shifted when shift != 1."""
    if steps < 1:
        raise InputError(f"inference_steps must be at least 1, got {steps}")
    t = torch.linspace(1.0, 0.0, steps + 1, device=device, dtype=dtype)
    if shift != 1.0:
        t = shift * t / (1 + (shift - 1) * t)
    return t


def start_from_source(timesteps: torch.Tensor, strength: float) -> tuple[torch.Tensor, float]:
    """`cover_noise_strength`: the schedule entry nearest to 1 - strength (the first on a tie, i.e. the
    noisier one; the final 0 is never a candidate) and the schedule from there on."""
    candidates = timesteps[:-1].tolist()
    target = 1.0 - strength
    index = min(range(len(candidates)), key=lambda i: abs(candidates[i] - target))
    return timesteps[index:], candidates[index]
