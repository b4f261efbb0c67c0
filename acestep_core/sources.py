"""Source and reference audio as the engine takes it: a path or a tensor -> float32 [2, N] at 48 kHz."""

from __future__ import annotations

import torch

from . import audio_io
from .errors import InputError
from .values import check_finite_tensor

SAMPLE_RATE = 48000
HOP = 1920  # samples per latent frame


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
        wave = audio_io.load_audio(src)
    if wave.shape[-1] < HOP:
        raise InputError(f"{what} is shorter than 0.04 s; give at least one latent frame of audio")
    return wave
