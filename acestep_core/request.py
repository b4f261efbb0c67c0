"""A generation request, with the official REST parameter names (ACESTEP15.md §11.3)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional, Union

import torch

from .errors import InputError
from .plan import Plan
from .prompts import TRACK_NAMES, TRACK_TASKS, VALID_LANGUAGES

TASK_TYPES = ("text2music", "cover", "repaint", "continuation", *TRACK_TASKS)
SOURCE_TASKS = ("cover", "repaint", "continuation", *TRACK_TASKS)
# The official pipeline skips the LM where the source audio sets the song; for lego / complete it plans
# metadata only (its codes would replace the source those tasks build on).
LM_SKIPPED_TASKS = ("cover", "repaint", "continuation", "extract")
LM_METAS_ONLY_TASKS = ("lego", "complete")
TASK_ALIASES = {"repainting": "repaint", "continue": "continuation", "extend": "continuation"}
INFER_METHODS = ("ode", "sde")
CHUNK_MASK_MODES = ("auto", "explicit")
REPAINT_MODES = ("aggressive", "balanced", "conservative")
MIN_DURATION, MAX_DURATION = 10.0, 600.0
MAX_BATCH = 8
MAX_SEED = 2**32 - 1

AudioInput = Union[str, Path, torch.Tensor, None]


@dataclass
class GenerationRequest:
    caption: str = ""
    lyrics: str = ""
    bpm: Optional[int] = None
    key_scale: str = ""
    time_signature: str = ""
    vocal_language: str = "en"
    audio_duration: Optional[float] = None
    inference_steps: int = 8
    guidance_scale: float = 7.0
    shift: float = 3.0
    seed: Union[int, str, list] = -1
    infer_method: str = "ode"
    timesteps: Optional[Union[str, list]] = None
    task_type: str = "text2music"
    src_audio: AudioInput = None
    reference_audio: AudioInput = None
    repainting_start: float = 0.0
    repainting_end: Optional[float] = None
    audio_cover_strength: float = 1.0
    # Start from the source re-noised to t = 1 - strength instead of pure noise (0 = off; [M] handler).
    cover_noise_strength: float = 0.0
    audio_code_string: Union[str, list, None] = ""
    cfg_interval_start: float = 0.0
    cfg_interval_end: float = 1.0
    chunk_mask_mode: str = "auto"
    repaint_mode: str = "balanced"
    repaint_strength: float = 0.5
    batch_size: int = 1
    src_latents: Optional[torch.Tensor] = None
    plan: Optional[Plan] = None
    # Continuation only: seconds to add after the source (sets the repaint window past its end).
    continuation_seconds: Optional[float] = None
    # extract / lego: the one track to take out or add; complete: the tracks to add (list or comma string).
    track_name: str = ""
    track_classes: Union[str, list, None] = ""
    # The DiT instruction; empty = the task's own (ACESTEP15.md §7.1).
    instruction: str = ""
    # LoRA / LoKr adapters on the DiT decoder for this request, in order (acestep_core.adapters.ScaledAdapter).
    adapters: list = field(default_factory=list)

    def __post_init__(self):
        self.task_type = TASK_ALIASES.get(self.task_type, self.task_type)

    def validate(self) -> None:
        """Raise InputError naming the first bad field and what it accepts."""
        if self.task_type not in TASK_TYPES:
            raise InputError(f"task_type must be one of {', '.join(TASK_TYPES)}, got {self.task_type!r}")
        if self.infer_method not in INFER_METHODS:
            raise InputError(f"infer_method must be 'ode' or 'sde', got {self.infer_method!r}")
        if self.chunk_mask_mode not in CHUNK_MASK_MODES:
            raise InputError(f"chunk_mask_mode must be 'auto' or 'explicit', got {self.chunk_mask_mode!r}")
        if self.repaint_mode not in REPAINT_MODES:
            raise InputError(f"repaint_mode must be one of {', '.join(REPAINT_MODES)}, got {self.repaint_mode!r}")
        _check_range("repaint_strength", self.repaint_strength, 0.0, 1.0)
        _check_range("audio_cover_strength", self.audio_cover_strength, 0.0, 1.0)
        _check_range("cover_noise_strength", self.cover_noise_strength, 0.0, 1.0)
        _check_range("cfg_interval_start", self.cfg_interval_start, 0.0, 1.0)
        _check_range("cfg_interval_end", self.cfg_interval_end, 0.0, 1.0)
        if self.cfg_interval_start > self.cfg_interval_end:
            raise InputError("cfg_interval_start must not exceed cfg_interval_end")
        _check_range("guidance_scale", self.guidance_scale, 0.0, 30.0)
        _check_range("shift", self.shift, 0.1, 10.0)
        if not isinstance(self.inference_steps, int) or not 1 <= self.inference_steps <= 200:
            raise InputError(f"inference_steps must be an integer from 1 to 200, got {self.inference_steps!r}")
        if not isinstance(self.batch_size, int) or not 1 <= self.batch_size <= MAX_BATCH:
            raise InputError(f"batch_size must be an integer from 1 to {MAX_BATCH}, got {self.batch_size!r}")
        if self.audio_duration is not None and self.audio_duration > 0:
            _check_range("audio_duration", self.audio_duration, 1.0, MAX_DURATION)
        if self.bpm is not None:
            if not isinstance(self.bpm, int) or not 30 <= self.bpm <= 300:
                raise InputError(f"bpm must be an integer from 30 to 300, got {self.bpm!r}")
        if self.vocal_language and self.vocal_language not in VALID_LANGUAGES:
            raise InputError(
                f"vocal_language {self.vocal_language!r} is not supported; use one of: {' '.join(VALID_LANGUAGES)}"
            )
        if self.task_type in SOURCE_TASKS:
            if self.src_audio is None and self.src_latents is None:
                raise InputError(f"task_type {self.task_type!r} needs src_audio (or src_latents)")
        self.tracks()  # parses and checks
        if self.task_type in ("repaint", "lego"):
            if self.repainting_end is not None and self.repainting_end >= 0 and self.repainting_end <= self.repainting_start:
                raise InputError(
                    f"repainting_end ({self.repainting_end}) must be after repainting_start ({self.repainting_start})"
                )
        if self.task_type == "continuation" and self.continuation_seconds is not None:
            _check_range("continuation_seconds", self.continuation_seconds, 0.2, MAX_DURATION)
        if self.src_latents is not None:
            if not isinstance(self.src_latents, torch.Tensor) or self.src_latents.ndim != 3 or self.src_latents.shape[-1] != 64:
                shape = tuple(self.src_latents.shape) if isinstance(self.src_latents, torch.Tensor) else type(self.src_latents).__name__
                raise InputError(f"src_latents must be a [batch, frames, 64] tensor, got {shape}")
        self.seeds()  # parses and checks
        from .adapters import ScaledAdapter

        for item in self.adapters or []:
            if not isinstance(item, ScaledAdapter):
                raise InputError(f"adapters must be loaded adapters with a scale (ScaledAdapter), got {type(item).__name__}")

    def tracks(self) -> list[str]:
        """The track names of an extract / lego (one) or complete (any number) task, lower case."""
        if self.task_type in ("extract", "lego"):
            if "," in (self.track_name or "") or "|" in (self.track_name or ""):
                raise InputError(f"track_name names one track for {self.task_type}, got {self.track_name!r}; "
                                 "use task_type 'complete' to add several")
            raw = [self.track_name] if self.track_name else []
        elif self.task_type == "complete":
            raw = self.track_classes
        else:
            return []
        return parse_tracks(raw, "track_name" if self.task_type != "complete" else "track_classes")

    def seeds(self) -> list[Optional[int]]:
        """One seed per batch item; None means draw a random one."""
        raw = self.seed
        if isinstance(raw, str):
            parts = [p.strip() for p in raw.split(",") if p.strip()]
            try:
                values = [int(p) for p in parts] or [-1]
            except ValueError:
                raise InputError(f"seed must be an integer or a comma-separated list of integers, got {raw!r}") from None
        elif isinstance(raw, (list, tuple)):
            values = [int(v) for v in raw] or [-1]
        else:
            values = [int(raw)]
        for v in values:
            if v < -1 or v > MAX_SEED:
                raise InputError(f"seed must be -1 (random) or 0..{MAX_SEED}, got {v}")
        if len(values) < self.batch_size:
            # A single given seed seeds the whole batch as consecutive values, like the official UI.
            last = values[-1]
            values = values + [(-1 if last < 0 else last + i + 1) for i in range(self.batch_size - len(values))]
        return [None if v < 0 else v for v in values[: self.batch_size]]

    def to_public_dict(self) -> dict[str, Any]:
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                value = f"<tensor {list(value.shape)}>"
            elif isinstance(value, Path):
                value = str(value)
            elif isinstance(value, Plan):
                value = value.to_dict()
            elif f.name == "adapters":
                value = [a.describe() for a in value or []]
            out[f.name] = value
        return out


def normalize_track(name: str) -> str:
    """'Backing Vocals' / 'backing-vocals' / 'BACKING_VOCALS' -> 'backing_vocals'."""
    return "_".join(name.strip().lower().replace("-", " ").split())


def parse_tracks(raw: Union[str, list, None], field_name: str = "tracks") -> list[str]:
    """Track names from a list or a string separated by ',' or '|': normalised, checked, deduplicated."""
    if isinstance(raw, str):
        raw = raw.replace("|", ",").split(",")
    names = [normalize_track(str(r)) for r in (raw or []) if str(r).strip()]
    for name in names:
        if name not in TRACK_NAMES:
            raise InputError(f"{field_name}: unknown track {name!r}; use one of: {', '.join(TRACK_NAMES)}")
    return list(dict.fromkeys(names))


def _check_range(name: str, value, low: float, high: float) -> None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number from {low} to {high}, got {value!r}") from None
    if math.isnan(number) or not low <= number <= high:
        raise InputError(f"{name} must be from {low} to {high}, got {value!r}")
