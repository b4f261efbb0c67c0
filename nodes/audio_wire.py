"""Conversions between ComfyUI's AUDIO / LATENT wire values and the engine's tensors.

ComfyUI AUDIO: {"waveform": float32 [B, C, N] on CPU, "sample_rate": int} (any rate, mono or
stereo, from LoadAudio or any other node). The engine wants float32 [2, N] at 48 kHz.
ComfyUI LATENT for ACE-Step 1.5: {"samples": [B, 64, T], "type": "audio"}; the engine keeps
latents as [B, T, 64].
"""

from __future__ import annotations

import torch

from ..acestep_core.errors import InputError

from ..acestep_core.constants import FRAMES_PER_SECOND as LATENT_FRAMES_PER_SECOND  # noqa: F401
from ..acestep_core.constants import LATENT_CHANNELS  # noqa: F401
from ..acestep_core.constants import SAMPLE_RATE as ENGINE_SAMPLE_RATE


def to_comfy_audio(audio: torch.Tensor, sample_rate: int) -> dict:
    """Engine audio [B, 2, N] (or [2, N]) -> ComfyUI AUDIO on the CPU."""
    if audio.dim() == 2:
        audio = audio.unsqueeze(0)
    return {"waveform": audio.detach().to("cpu", torch.float32).contiguous(), "sample_rate": int(sample_rate)}


def from_comfy_audio(audio, what: str = "audio", index: int = 0) -> torch.Tensor:
    """ComfyUI AUDIO -> one engine clip, float32 [2, N] at 48 kHz (batch item `index`)."""
    if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
        raise InputError(f"{what}: expected an AUDIO value (connect a LoadAudio or generation node)")
    wave = audio["waveform"]
    if not torch.is_tensor(wave) or wave.dim() not in (2, 3):
        raise InputError(f"{what}: waveform must be a [batch, channels, samples] tensor")
    if wave.dim() == 3:
        if index >= wave.shape[0]:
            raise InputError(f"{what}: batch has {wave.shape[0]} item(s), item {index} requested")
        wave = wave[index]
    wave = wave.detach().to("cpu", torch.float32)
    if wave.shape[-1] == 0:
        raise InputError(f"{what} is empty (0 samples)")
    if not torch.isfinite(wave).all():
        raise InputError(f"{what} contains NaN or infinite samples")
    channels = wave.shape[0]
    if channels == 1:
        wave = wave.repeat(2, 1)
    elif channels > 2:
        wave = wave[:2]
    rate = int(audio["sample_rate"])
    if rate <= 0:
        raise InputError(f"{what}: invalid sample rate {rate}")
    if rate != ENGINE_SAMPLE_RATE:
        wave = _resample(wave, rate, ENGINE_SAMPLE_RATE)
    return wave.contiguous()


def duration_of(audio: dict) -> float:
    return float(audio["waveform"].shape[-1]) / float(audio["sample_rate"])


def _resample(wave: torch.Tensor, source_rate: int, target_rate: int) -> torch.Tensor:
    import torchaudio.functional as AF

    return AF.resample(wave, source_rate, target_rate)


def to_comfy_latent(latents: torch.Tensor) -> dict:
    """Engine latents [B, T, 64] -> ComfyUI ACE-Step 1.5 LATENT [B, 64, T]."""
    if latents.dim() != 3 or latents.shape[-1] != LATENT_CHANNELS:
        raise InputError(f"expected engine latents [B, T, {LATENT_CHANNELS}], got {list(latents.shape)}")
    samples = latents.detach().to("cpu", torch.float32).transpose(1, 2).contiguous()
    return {"samples": samples, "type": "audio"}
