"""Repaint, in one place: the window (repaint, continuation, lego), its padding past the source, the
modes of the official sampler (step injection, latent cross-fade, waveform splice), and the guide the
denoising loop applies (docs/tasks.md#repaint-modes). `tasks.repaint_inputs` builds the DiT inputs
from a window; `sampling.denoise` calls `RepaintGuide.inject` after each step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .constants import SAMPLE_RATE  # noqa: F401  (re-exported)
from .errors import InputError


@dataclass(frozen=True)
class RepaintSettings:
    injection_ratio: float  # fraction of steps whose outside-window frames are re-noised from the source
    crossfade_frames: int  # latent cross-fade width on each side of the window
    splice_seconds: float  # waveform cross-fade when splicing the source back outside the window

    @property
    def active(self) -> bool:
        return self.injection_ratio > 0 or self.crossfade_frames > 0 or self.splice_seconds > 0


@dataclass(frozen=True)
class RepaintWindow:
    start_frame: int
    end_frame: int
    start_seconds: float
    end_seconds: float
    settings: RepaintSettings


@dataclass
class RepaintGuide:
    """Step injection: frames outside `window` follow the clean source along the noise path."""

    window: torch.Tensor  # [B, T] bool, True = regenerate
    clean_latents: torch.Tensor  # [B, T, 64]
    injection_steps: int

    @classmethod
    def for_window(cls, repaint: RepaintWindow, clean: torch.Tensor, num_steps: int) -> Optional["RepaintGuide"]:
        """The guide for `repaint` over `num_steps` steps; None when its mode injects nothing."""
        steps = round(repaint.settings.injection_ratio * num_steps)
        if steps <= 0:
            return None
        window = torch.zeros(clean.shape[0], clean.shape[1], dtype=torch.bool, device=clean.device)
        window[:, repaint.start_frame: repaint.end_frame] = True
        return cls(window=window, clean_latents=clean, injection_steps=steps)

    def inject(self, x: torch.Tensor, step: int, t_next, noise: torch.Tensor) -> torch.Tensor:
        """After step `step`: outside the window, the source re-noised to `t_next`."""
        if step >= self.injection_steps:
            return x
        keep = ~self.window.unsqueeze(-1)
        renoised = t_next * noise + (1 - t_next) * self.clean_latents.to(x.dtype)
        return torch.where(keep, renoised, x)


def resolve_window(task: str, start: float, end: Optional[float], continuation_seconds: Optional[float],
                   source_seconds: float) -> tuple[float, float]:
    """The window in seconds of the source. Repaint / lego: [start, end or the source's end).
    Continuation: from `start` (default: the source's end) to `end`, or `continuation_seconds` past the end."""
    if task == "continuation":
        if end in (None, -1):
            end = source_seconds + continuation_seconds if continuation_seconds else None
        if end is None:
            raise InputError("continuation needs continuation_seconds (or repainting_end past the end of the source)")
        start = start if start else source_seconds
    else:
        end = source_seconds if end is None or end < 0 else end
    if end <= start:
        raise InputError(f"repainting_end ({end}) must be after repainting_start ({start})")
    return start, end


def pad_for_window(waveform: torch.Tensor, start: float, end: float) -> tuple[torch.Tensor, float, float]:
    """Zero-pad the source waveform so the window fits; returns the new waveform and shifted window."""
    seconds = waveform.shape[-1] / SAMPLE_RATE
    left = max(0.0, -start)
    right = max(0.0, end - seconds)
    if left or right:
        left_n, right_n = int(round(left * SAMPLE_RATE)), int(round(right * SAMPLE_RATE))
        waveform = torch.nn.functional.pad(waveform, (left_n, right_n))
    return waveform, start + left, end + left


def repaint_settings(mode: str, strength: float = 0.5) -> RepaintSettings:
    if mode == "aggressive":
        return RepaintSettings(0.0, 0, 0.0)
    if mode == "conservative":
        return RepaintSettings(1.0, 25, 0.05)
    inverse = 1.0 - strength
    return RepaintSettings(inverse, round(25 * inverse), 0.05 * inverse)


def edge_ramps(length: int, left: int, right: int, width: int, dtype=torch.float32) -> torch.Tensor:
    """1 inside [left, right), linear ramps (endpoints excluded) over `width` on each side, 0 elsewhere."""
    weights = torch.zeros(length, dtype=dtype)
    weights[left:right] = 1.0
    lo, hi = max(0, left - width), min(length, right + width)
    if left > lo:
        weights[lo:left] = torch.linspace(0, 1, left - lo + 2, dtype=torch.float64)[1:-1].to(dtype)
    if hi > right:
        weights[right:hi] = torch.linspace(1, 0, hi - right + 2, dtype=torch.float64)[1:-1].to(dtype)
    return weights


def crossfade_latents(generated: torch.Tensor, clean: torch.Tensor, left: int, right: int, width: int) -> torch.Tensor:
    """[B, T, C]: keep the generated window, the clean source outside, ramps in between."""
    blend = edge_ramps(generated.shape[1], left, right, width, dtype=torch.float32).to(generated.device)
    blend = blend.view(1, -1, 1).to(generated.dtype)
    return blend * generated + (1 - blend) * clean.to(generated.dtype)


def splice_waveform(generated: torch.Tensor, source: torch.Tensor, start_s: float, end_s: float, crossfade_s: float) -> torch.Tensor:
    """[B, 2, N]: the original waveform outside [start, end) seconds, generated audio inside."""
    length = min(generated.shape[-1], source.shape[-1])
    start = min(max(int(start_s * SAMPLE_RATE), 0), length)
    end = min(max(int(end_s * SAMPLE_RATE), start), length)
    if start == 0 and end >= length:
        return generated
    fade = int(crossfade_s * SAMPLE_RATE)
    mask = edge_ramps(length, start, end, fade, dtype=torch.float32).to(generated.device)
    out = generated.clone()
    src = source[..., :length].to(generated)
    out[..., :length] = mask * generated[..., :length] + (1 - mask) * src
    return out
