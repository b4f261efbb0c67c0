"""Task → DiT inputs: source latents, chunk mask, cover flag, repaint window (docs/tasks.md).

Latent-length and window rules follow the official handler, not diffusers' pipeline
(docs/sampling.md#where-diffusers-pipeline-differs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .errors import InputError
from .prompts import COVER_INSTRUCTION, REPAINT_INSTRUCTION, TEXT2MUSIC_INSTRUCTION
from .repaint import RepaintSettings, RepaintWindow, pad_for_window, repaint_settings  # noqa: F401 (re-exported)

from .constants import FRAMES_PER_SECOND, HOP, SAMPLE_RATE  # noqa: F401  (re-exported)

MIN_FRAMES = 128
DEFAULT_DURATION = 120.0


def seconds_to_frame(seconds: float) -> int:
    return int(seconds * SAMPLE_RATE // HOP)


def text2music_frames(duration: Optional[float]) -> int:
    return max(MIN_FRAMES, requested_frames(duration))


def requested_frames(duration: Optional[float]) -> int:
    """The frames a text2music duration asks for, before the 128-frame minimum pads it."""
    seconds = DEFAULT_DURATION if duration is None or duration <= 0 else duration
    return int(round(seconds, 1) * SAMPLE_RATE) // HOP


def silence_frames(silence_latent: torch.Tensor, start: int, end: int) -> torch.Tensor:
    """silence_latent[0, start:end], tiled when the span runs past its length."""
    length = silence_latent.shape[1]
    if end <= length:
        return silence_latent[0, start:end]
    reps = (end + length - 1) // length
    return silence_latent[0].repeat(reps, 1)[start:end]


@dataclass
class TaskInputs:
    task: str  # text2music | cover | repaint | extract | lego | complete (continuation is a repaint past the end)
    instruction: str
    frames: int
    src_latents: torch.Tensor  # [1, T, 64]
    chunk_mask: torch.Tensor  # [1, T] float (1 = generate)
    is_cover: bool
    metas_duration: Optional[float]
    repaint: Optional[RepaintWindow] = None
    clean_latents: Optional[torch.Tensor] = None  # the encoded source, for repaint injection / cross-fade
    source_waveform: Optional[torch.Tensor] = None  # [2, N], padded as the latents are
    # Each item's own frames when shorter than `frames` (the rest is padding the DiT must not
    # attend to); one entry per batch item, or one for all; None = no padding.
    valid_frames: Optional[list[int]] = None


def text2music_inputs(silence_latent: torch.Tensor, duration: Optional[float]) -> TaskInputs:
    frames = text2music_frames(duration)
    own = requested_frames(duration)
    return TaskInputs(
        valid_frames=[own] if own < frames else None,
        task="text2music",
        instruction=TEXT2MUSIC_INSTRUCTION,
        frames=frames,
        src_latents=silence_frames(silence_latent, 0, frames).unsqueeze(0),
        chunk_mask=torch.ones(1, frames),
        is_cover=False,
        metas_duration=duration,
    )


def codes_cover_inputs(silence_latent: torch.Tensor, hints: list[torch.Tensor], duration: Optional[float]) -> TaskInputs:
    """Text2music with LM codes runs as cover: each item's hints [1, 5·n, 64] replace its source, padded
    with the head of the silence latent (as the reference pads) to the longest item and at least 128 frames."""
    lengths = [h.shape[1] for h in hints]
    frames = max(max(lengths), MIN_FRAMES)
    rows = [torch.cat([h[0], silence_frames(silence_latent, 0, frames - h.shape[1]).to(h)], dim=0) for h in hints]
    return TaskInputs(
        valid_frames=lengths if min(lengths) < frames else None,
        task="cover",
        instruction=COVER_INSTRUCTION,
        frames=frames,
        src_latents=torch.stack(rows),
        chunk_mask=torch.ones(1, frames),
        is_cover=True,
        metas_duration=duration,
    )


def cover_audio_inputs(source_latents: torch.Tensor, source_seconds: float) -> TaskInputs:
    """Cover from audio: the encoded source goes in; the DiT's own tokenizer bottleneck is applied later."""
    return full_source_inputs("cover", COVER_INSTRUCTION, source_latents, source_seconds, is_cover=True)


def full_source_inputs(task: str, instruction: str, source_latents: torch.Tensor, source_seconds: float,
                       is_cover: bool = False) -> TaskInputs:
    """The whole encoded source as the context, every frame generated: cover, extract, complete.
    Only cover passes it through the 5 Hz bottleneck (is_cover); extract / complete take it as it is."""
    frames = source_latents.shape[1]
    return TaskInputs(
        task=task,
        instruction=instruction,
        frames=frames,
        src_latents=source_latents,
        chunk_mask=torch.ones(1, frames),
        is_cover=is_cover,
        metas_duration=source_seconds,
    )


def repaint_inputs(
    source_latents: torch.Tensor,
    silence_latent: torch.Tensor,
    start_seconds: float,
    end_seconds: float,
    source_seconds: float,
    chunk_mask_mode: str,
    repaint_mode: str,
    repaint_strength: float,
    source_waveform: Optional[torch.Tensor] = None,
    task: str = "repaint",
    instruction: str = REPAINT_INSTRUCTION,
) -> TaskInputs:
    """A window to regenerate. Repaint silences the source inside it; lego keeps the source mix
    there as the context its new track is generated against (the reference's `is_lego`)."""
    frames = source_latents.shape[1]
    start_frame = max(0, seconds_to_frame(start_seconds))
    end_frame = min(frames, seconds_to_frame(end_seconds))
    if end_frame <= start_frame:
        raise InputError(
            f"the repaint window {start_seconds:.2f}–{end_seconds:.2f} s is empty for a source of "
            f"{frames / FRAMES_PER_SECOND:.2f} s; choose an end after the start (at least 0.04 s apart)"
        )
    src = source_latents.clone()
    if task != "lego":
        src[0, start_frame:end_frame] = silence_frames(silence_latent, start_frame, end_frame).to(src)
    window = torch.zeros(1, frames)
    window[0, start_frame:end_frame] = 1.0
    # The official "auto" mode writes 2.0 into a boolean mask: the DiT then sees all ones
    # (docs/tasks.md#chunk-mask-modes), while the window still drives injection and splicing.
    chunk_mask = torch.ones(1, frames) if chunk_mask_mode == "auto" else window.clone()
    return TaskInputs(
        task=task,
        instruction=instruction,
        frames=frames,
        src_latents=src,
        chunk_mask=chunk_mask,
        is_cover=False,
        metas_duration=source_seconds,
        repaint=RepaintWindow(start_frame, end_frame, start_seconds, end_seconds, repaint_settings(repaint_mode, repaint_strength)),
        clean_latents=source_latents,
        source_waveform=source_waveform,
    )
