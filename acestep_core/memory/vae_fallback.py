"""VAE decode that never hangs or fails silently on out-of-memory.

`tiled_decode` decodes latents in overlapping windows (overlap-discard, batch items one at a time),
so peak memory depends on the window size, not on the song length. `decode_with_fallback` runs a
decode and, on out-of-memory, halves the window down to a floor, then decodes on the CPU, saying
what it does at each step.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from ..errors import ACEStepError
from .offload import empty_device_cache

# Latent frames decoded but discarded on each side of a window ([M] handler: 64).
DEFAULT_OVERLAP_FRAMES = 64
# Below this the windows are mostly overlap: go to the CPU instead of halving again.
MIN_CHUNK_FRAMES = 16
CPU_CHUNK_FRAMES = 256

_OOM_MARKERS = ("out of memory", "can't allocate memory", "cannot allocate memory",
                "failed to allocate", "not enough memory")


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA / XPU `OutOfMemoryError`, MPS "MPS backend out of memory", CPU allocator failures."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc).lower() for m in _OOM_MARKERS)


def tiled_decode(decode_window: Callable[[torch.Tensor], torch.Tensor], latents: torch.Tensor,
                 chunk_frames: int, overlap_frames: int = DEFAULT_OVERLAP_FRAMES) -> torch.Tensor:
    """Decode latents [B, C, T] window by window with `decode_window([1, C, t]) -> [1, channels, t*hop]`.

    Each window of `chunk_frames` frames carries up to `overlap_frames` of context on both sides;
    the context part of the output is discarded, so the result matches one full decode up to the
    decoder's receptive field. The overlap shrinks for small windows so every window makes progress.
    Output is on the device and dtype `decode_window` returns.
    """
    if latents.dim() != 3:
        raise ValueError(f"latents must be [batch, channels, frames], got shape {tuple(latents.shape)}")
    total = latents.shape[-1]
    chunk_frames = max(1, int(chunk_frames))
    overlap = min(overlap_frames, max(0, (chunk_frames - 1) // 4))
    stride = max(1, chunk_frames - 2 * overlap)

    items = []
    for item in latents.split(1, dim=0):  # one song at a time keeps peak memory flat in batch size
        if total <= chunk_frames:
            items.append(decode_window(item))
            continue
        pieces = []
        hop = None
        for start in range(0, total, stride):
            end = min(start + stride, total)
            win_start, win_end = max(0, start - overlap), min(total, end + overlap)
            audio = decode_window(item[..., win_start:win_end])
            if hop is None:
                hop = audio.shape[-1] // (win_end - win_start)
            head = (start - win_start) * hop
            pieces.append(audio[..., head:head + (end - start) * hop])
        items.append(torch.cat(pieces, dim=-1))
    return torch.cat(items, dim=0)


def decode_with_fallback(decode_fn: Callable[[torch.Tensor, int, torch.device], torch.Tensor],
                         latents: torch.Tensor, chunk_frames: int, device: torch.device | str,
                         log: Callable[[str], None] = print, min_chunk_frames: int = MIN_CHUNK_FRAMES,
                         cpu_chunk_frames: int = CPU_CHUNK_FRAMES) -> torch.Tensor:
    """Run `decode_fn(latents, chunk_frames, device)`, recovering from out-of-memory.

    `decode_fn` owns placement: it moves the VAE and the latents to `device` and decodes with
    windows of `chunk_frames` frames. On out-of-memory the window is halved (down to
    `min_chunk_frames`), then the decode runs on the CPU (window `cpu_chunk_frames`, halved again
    if even RAM runs out). Every step is reported through `log`. Errors that are not
    out-of-memory propagate unchanged; running out of memory everywhere raises `ACEStepError`.
    """
    device = torch.device(device)
    attempts: list[tuple[torch.device, int]] = []
    chunk = max(1, int(chunk_frames))
    while True:
        attempts.append((device, chunk))
        if chunk <= min_chunk_frames:
            break
        chunk = max(min_chunk_frames, chunk // 2)
    if device.type != "cpu":
        chunk = max(1, min(int(cpu_chunk_frames), int(chunk_frames)))
        cpu = torch.device("cpu")
        while True:
            attempts.append((cpu, chunk))
            if chunk <= min_chunk_frames:
                break
            chunk = max(min_chunk_frames, chunk // 2)

    last_error: BaseException | None = None
    for index, (where, chunk) in enumerate(attempts):
        if index:
            prev_where, prev_chunk = attempts[index - 1]
            if where.type != prev_where.type:
                log(f"VAE decode ran out of memory on {prev_where} even with {prev_chunk}-frame windows; "
                    f"decoding on the CPU instead (slower).")
            else:
                log(f"VAE decode ran out of memory on {where} with {prev_chunk}-frame windows; "
                    f"retrying with {chunk}-frame windows.")
        try:
            return decode_fn(latents, chunk, where)
        except Exception as exc:  # only out-of-memory is recovered; the rest propagates
            if not is_out_of_memory(exc):
                raise
            last_error = exc
            # Drop the failed attempt's tensors before the next try.
            exc.__traceback__ = None
            empty_device_cache(where)
    frames = latents.shape[-1]
    raise ACEStepError(
        f"VAE decode of {frames} latent frames ({frames / 25:.0f} s) ran out of memory on every device, "
        f"down to {attempts[-1][1]}-frame windows on the CPU. Free some RAM or generate a shorter song."
    ) from last_error


def decode_fn_for_vae(vae: torch.nn.Module, overlap_frames: int = DEFAULT_OVERLAP_FRAMES,
                      output_device: torch.device | str = "cpu") -> Callable[[torch.Tensor, int, torch.device], torch.Tensor]:
    """A `decode_fn` for a diffusers `AutoencoderOobleck`: windows decoded on `device`, audio float32 on
    `output_device` (so long songs do not accumulate on the accelerator)."""

    def decode(latents: torch.Tensor, chunk_frames: int, device: torch.device) -> torch.Tensor:
        vae.to(device)
        dtype = next(vae.parameters()).dtype

        def window(part: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                audio = vae.decode(part.to(device=device, dtype=dtype)).sample
            return audio.to(device=output_device, dtype=torch.float32)

        return tiled_decode(window, latents, chunk_frames, overlap_frames)

    return decode


def official_vae_decode_fn(vae: torch.nn.Module, progress: Callable[[int, int], None] | None = None,
                           ) -> Callable[[torch.Tensor, int, torch.device], torch.Tensor]:
    """A `decode_fn` around the engine's official-tiling `acestep_core.vae.vae_decode` (latents
    [B, T, 64] → float32 CPU audio): the VAE is moved to each attempt's device first, so after a
    CPU fallback the next song starts on the accelerator again."""
    from ..vae import vae_decode  # engine module; imported here so this file stays dependency-light

    def decode(latents: torch.Tensor, chunk_frames: int, device: torch.device) -> torch.Tensor:
        vae.to(device)
        return vae_decode(vae, latents, chunk_frames=chunk_frames, progress=progress)

    return decode


def frames_for_seconds(seconds: float) -> int:
    """Latent frames (25 per second) of `seconds` of audio."""
    return int(math.ceil(seconds * 25))
