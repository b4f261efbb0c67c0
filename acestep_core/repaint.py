"""Repaint modes of the official sampler: step injection, latent cross-fade, waveform splice (docs/tasks.md#repaint-modes)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .constants import SAMPLE_RATE  # noqa: F401  (re-exported)


@dataclass(frozen=True)
class RepaintSettings:
    injection_ratio: float  # fraction of steps whose outside-window frames are re-noised from the source
    crossfade_frames: int  # latent cross-fade width on each side of the window
    splice_seconds: float  # waveform cross-fade when splicing the source back outside the window

    @property
    def active(self) -> bool:
        return self.injection_ratio > 0 or self.crossfade_frames > 0 or self.splice_seconds > 0


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
