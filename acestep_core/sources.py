"""Source and reference audio as the engine takes it: a path or a tensor -> float32 [2, N] at 48 kHz."""

from __future__ import annotations

from pathlib import Path

import torch

from . import audio_io
from .errors import InputError
from .values import check_finite_tensor

from .constants import HOP, SAMPLE_RATE  # noqa: F401  (re-exported)


def source_waveform(src, what: str) -> torch.Tensor:
    """A path or a tensor -> float32 [2, N] at 48 kHz on the CPU, finite, at least one latent frame long."""
    if isinstance(src, torch.Tensor):
        wave = src.detach().float().cpu()
        if wave.dim() == 1:
            wave = wave.unsqueeze(0)
        if wave.dim() == 3 and wave.shape[0] == 1:
            wave = wave[0]
        if wave.dim() != 2:
            raise InputError(f"{what} tensor must be [channels, samples] at 48 kHz, got {tuple(src.shape)}")
        check_finite_tensor(what, wave)
        if wave.shape[0] == 1:
            wave = wave.expand(2, -1)
        wave = wave[:2].clamp(-1, 1)
    else:
        from .request import MAX_DURATION

        # A declared length far over the limit is refused before decoding hours of audio.
        declared = audio_io.probe_seconds(src) if Path(src).is_file() else None
        if declared is not None and declared > MAX_DURATION + 1:
            raise InputError(f"{what} {src} is {declared:.1f} s long; the longest source the engine takes is "
                             f"{MAX_DURATION:g} s: cut it to the part you need first")
        wave = audio_io.load_audio(src)
    if wave.shape[-1] < HOP:
        raise InputError(f"{what} is shorter than 0.04 s; give at least one latent frame of audio")
    return wave
