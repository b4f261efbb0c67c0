"""A generation request, with the official REST parameter names (docs/rest-api.md#release_task-parameters)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Optional, Union

import torch

from . import schema, values
from .errors import InputError
from .plan import Plan
from .prompts import TRACK_NAMES, TRACK_TASKS
# Vocabularies and limits live in the schema; these names stay importable from here.
from .constants import SAMPLE_RATE
from .schema import (CHUNK_MASK_MODES, INFER_METHODS, MAX_BATCH, MAX_DURATION, MAX_SEED, MIN_DURATION,
                     MIN_REQUEST_DURATION, REPAINT_MODES, TASK_ALIASES, TASK_TYPES)

SOURCE_TASKS = ("cover", "repaint", "continuation", *TRACK_TASKS)
from .planning import LM_METAS_ONLY_TASKS, LM_SKIPPED_TASKS  # noqa: E402 (re-exported)
# A source shorter than this is too short to cover, repaint or extend; longer than MAX_DURATION is
# more than the engine can take in one run.
MIN_SOURCE_SECONDS = 1.0

AudioInput = Union[str, Path, torch.Tensor, None]


@dataclass
class GenerationRequest:
    caption: str = ""
    lyrics: str = ""
    bpm: Optional[int] = None
    key_scale: str = ""
    time_signature: str = ""
    vocal_language: str = "unknown"
    audio_duration: Optional[float] = None
    # None = the model's own (turbo 8, base / sft 32), resolved by the pipeline.
    inference_steps: Optional[int] = None
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
    use_adg: bool = False
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
    # The DiT instruction; empty = the task's own (docs/tasks.md#overview).
    instruction: str = ""
    # LoRA / LoKr adapters on the DiT decoder for this request, in order (acestep_core.adapters.ScaledAdapter).
    adapters: list = field(default_factory=list)

    def __post_init__(self):
        self.task_type = TASK_ALIASES.get(self.task_type, self.task_type)

    def validate(self) -> None:
        """Raise InputError naming the first bad field and what it accepts.

        Vocabulary fields are normalised in place to the spelling the models were trained on
        ('c MAJOR' -> 'C major', '4/4' -> '4', 'EN' -> 'en'). Nothing here loads a model or decodes
        audio; `check_sources` does the file checks that need the source itself."""
        if self.task_type not in TASK_TYPES:
            raise InputError(f"task_type must be one of {', '.join(TASK_TYPES)}, got {self.task_type!r}")
        if self.infer_method not in INFER_METHODS:
            raise InputError(f"infer_method must be 'ode' or 'sde', got {self.infer_method!r}")
        if self.chunk_mask_mode not in CHUNK_MASK_MODES:
            raise InputError(f"chunk_mask_mode must be 'auto' or 'explicit', got {self.chunk_mask_mode!r}")
        if self.repaint_mode not in REPAINT_MODES:
            raise InputError(f"repaint_mode must be one of {', '.join(REPAINT_MODES)}, got {self.repaint_mode!r}")
        for name in ("caption", "lyrics", "instruction"):
            setattr(self, name, values.check_text(name, getattr(self, name)))
        self.key_scale = values.key_scale(self.key_scale)
        self.time_signature = values.time_signature(self.time_signature)
        self.vocal_language = values.language(self.vocal_language)
        for name in ("repaint_strength", "audio_cover_strength", "cover_noise_strength", "cfg_interval_start",
                     "cfg_interval_end", "guidance_scale", "shift"):
            _check_range(name, getattr(self, name))
        if self.cfg_interval_start > self.cfg_interval_end:
            raise InputError("cfg_interval_start must not exceed cfg_interval_end")
        if not isinstance(self.use_adg, bool):
            raise InputError(f"use_adg must be true or false, got {self.use_adg!r}")
        if self.inference_steps is not None:
            _check_int("inference_steps", self.inference_steps)
        _check_int("batch_size", self.batch_size)
        # The engine itself runs down to the DiT's shortest output; the doors for people ask for 10 s.
        self.audio_duration = values.optional_duration("audio_duration", self.audio_duration, MIN_DURATION,
                                                       MAX_DURATION)
        if self.bpm is not None:
            _check_int("bpm", self.bpm)
        if self.task_type in SOURCE_TASKS:
            if self.src_audio is None and self.src_latents is None:
                raise InputError(f"task_type {self.task_type!r} needs src_audio (or src_latents)")
        self.tracks()  # parses and checks
        # One spelling on record, whichever door it came through ('' from a flag, [] from JSON).
        self.track_classes = parse_tracks(self.track_classes, "track_classes") if self.track_classes else []
        self._check_window()
        if self.continuation_seconds is not None:
            _check_range("continuation_seconds", self.continuation_seconds)
            if self.task_type != "continuation":  # it would be ignored: say so rather than drop it
                raise InputError(f"continuation_seconds only applies to task_type continuation, not "
                                 f"{self.task_type!r}; drop it, or use task_type continuation to add music "
                                 "after the end of the source")
        if self.src_latents is not None:
            if not isinstance(self.src_latents, torch.Tensor) or self.src_latents.ndim != 3 or self.src_latents.shape[-1] != 64:
                shape = tuple(self.src_latents.shape) if isinstance(self.src_latents, torch.Tensor) else type(self.src_latents).__name__
                raise InputError(f"src_latents must be a [batch, frames, 64] tensor, got {shape}")
            values.check_finite_tensor("src_latents", self.src_latents)
            seconds = self.src_latents.shape[1] / 25
            _check_source_seconds("src_latents", seconds)
        for name in ("src_audio", "reference_audio"):
            audio = getattr(self, name)
            if isinstance(audio, torch.Tensor):
                values.check_finite_tensor(name, audio)
        from .codes import codes_per_item

        codes_per_item(self.audio_code_string, self.batch_size)  # parses and checks (one string or one per item)
        self.seeds()  # parses and checks
        from .adapters import ScaledAdapter

        for item in self.adapters or []:
            if not isinstance(item, ScaledAdapter):
                raise InputError(f"adapters must be loaded adapters with a scale (ScaledAdapter), got {type(item).__name__}")

    def _check_window(self) -> None:
        """The repaint window's own rules; against the source length see `check_window_against_source`."""
        self.repainting_start = values.finite_number("repainting_start", self.repainting_start or 0.0)
        if self.repainting_end is not None:
            end = values.finite_number("repainting_end", self.repainting_end)
            if end < 0 and end != -1:
                raise InputError(f"repainting_end must be -1 (the end of the source) or a time in seconds, got {end:g}")
            self.repainting_end = None if end == -1 else end
        if self.task_type not in schema.WINDOW_TASKS:
            return
        if self.repainting_start < -MAX_DURATION:
            raise InputError(f"repainting_start {self.repainting_start:g} s pads more than {MAX_DURATION:g} s of "
                             "silence before the source; use a start of at least -600")
        if self.repainting_end is not None and self.repainting_end <= self.repainting_start:
            raise InputError(
                f"repainting_end ({self.repainting_end:g}) must be after repainting_start ({self.repainting_start:g})"
            )
        if self.repainting_end is not None and self.repainting_end - min(0.0, self.repainting_start) > MAX_DURATION:
            raise InputError(f"the repaint window ends at {self.repainting_end:g} s: the result would be longer than "
                             f"{MAX_DURATION:g} s")

    def check_window_against_source(self, source_seconds: float) -> None:
        """A window that starts after the source ends would insert silence: refuse it and say what to do."""
        _check_source_seconds("src_audio", source_seconds)
        if self.task_type not in schema.WINDOW_TASKS:
            return
        start = self.repainting_start
        if self.task_type == "continuation" and not start:
            return
        if start > source_seconds + 1 / 25:  # one latent frame of slack for rounding
            hint = ("use task_type continuation with continuation_seconds to add music after the end"
                    if self.task_type != "continuation" else f"use a start of at most {source_seconds:.2f} s")
            raise InputError(f"repainting_start {start:g} s is past the end of the source ({source_seconds:.2f} s), "
                             f"which would insert {start - source_seconds:.2f} s of silence; {hint}")
        end = self.repainting_end
        if self.task_type == "continuation" and end is None and self.continuation_seconds:
            end = source_seconds + self.continuation_seconds
        if end is not None and end - min(0.0, start) > MAX_DURATION:
            raise InputError(f"the window ends at {end:g} s: the result would be longer than {MAX_DURATION:g} s")

    def check_sources(self) -> "GenerationRequest":
        """Decode the source and reference audio files once and check them (finite samples, length,
        repaint window); returns a copy holding the decoded [2, N] tensors, so a front end can refuse
        a bad file before loading any model and the pipeline does not decode it again."""
        from .sources import source_waveform

        updates = {}
        for name in ("src_audio", "reference_audio"):
            audio = getattr(self, name)
            if audio is None:
                continue
            wave = source_waveform(audio, name)
            if name == "src_audio":
                self.check_window_against_source(wave.shape[-1] / SAMPLE_RATE)
            updates[name] = wave
        if self.src_latents is not None and self.src_audio is None:
            self.check_window_against_source(self.src_latents.shape[1] / 25)
        return replace(self, **updates) if updates else self

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


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_source_seconds(name: str, seconds: float) -> None:
    if seconds < MIN_SOURCE_SECONDS:
        raise InputError(f"{name} is {seconds:.2f} s long; a source must be at least {MIN_SOURCE_SECONDS:g} s")
    if seconds > MAX_DURATION:
        raise InputError(f"{name} is {seconds:.1f} s long; the longest source the engine takes is "
                         f"{MAX_DURATION:g} s: cut it to the part you need first")


def _check_int(name: str, value) -> None:
    low, high = schema.spec(name).low, schema.spec(name).high
    if not _is_int(value) or not low <= value <= high:
        raise InputError(f"{name} must be an integer from {low:g} to {high:g}, got {value!r}")


def _check_range(name: str, value) -> None:
    low, high = float(schema.spec(name).low), float(schema.spec(name).high)
    if isinstance(value, bool):
        raise InputError(f"{name} must be a number from {low} to {high}, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number from {low} to {high}, got {value!r}") from None
    if math.isnan(number) or not low <= number <= high:
        raise InputError(f"{name} must be from {low} to {high}, got {value!r}")
