"""The request schema: every field a user can set, in one table, for every door.

Each `Field` says what a value is (kind), its default per door, its range or choices, its official
REST name and aliases, and its help text. The doors derive from this table and nothing else:

- the CLI's flags (`add_cli_arguments`: `--key-scale`, defaults, help with the range),
- the REST field parsing (`server/params.py`: JSON, form and multipart values, official aliases),
- the ComfyUI widget ranges (`widget_range`),
- the engine's own checks (`GenerationRequest.validate` reads `low` / `high` / `choices` from here).

So a range, a default or an alias changes in one place. Where the official REST API and the official
Python API differ (REST `lm_cfg_scale` 2.5 and `vocal_language` "en" against 2.0 and "unknown"), the
field holds both: `default` is the engine's (the official Python API's), `door_defaults` the others.
See docs/rest-api.md#release_task-parameters for the REST side.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from .lm.constants import BPM_MAX, BPM_MIN, DURATION_MAX, DURATION_MIN, VALID_TIME_SIGNATURES
from .prompts import TRACK_NAMES, TRACK_TASKS

# The limits every door shares. The metas' ranges are the 5 Hz LM's vocabulary (lm/constants.py), so a
# door accepts exactly what the LM could have planned. The doors for people take the official API's
# duration range (10-600 s); the engine itself runs down to 1 s (the DiT's shortest output is 5.12 s).
MIN_DURATION, MAX_DURATION = 1.0, float(DURATION_MAX)
MIN_REQUEST_DURATION = float(DURATION_MIN)
MAX_BATCH = 8
MAX_SEED = 2**32 - 1

DOORS = ("engine", "cli", "rest", "node")
TASK_TYPES = ("text2music", "cover", "repaint", "continuation", *TRACK_TASKS)
TASK_ALIASES = {"repainting": "repaint", "continue": "continuation", "extend": "continuation"}
# The tasks that read repainting_start / repainting_end; every other task ignores the window.
WINDOW_TASKS = ("repaint", "lego", "continuation")
INFER_METHODS = ("ode", "sde")
CHUNK_MASK_MODES = ("auto", "explicit")
REPAINT_MODES = ("balanced", "aggressive", "conservative")
TIME_SIGNATURES = tuple(str(v) for v in VALID_TIME_SIGNATURES)
# The command line writes files through the encoders the CLI exposes; the REST API adds wav32 (the
# official name for 32-bit float WAV).
CLI_AUDIO_FORMATS = ("flac", "mp3", "wav", "opus", "aac")
REST_AUDIO_FORMATS = ("mp3", "wav", "flac", "opus", "wav32", "aac")


@dataclass(frozen=True)
class Field:
    """One request field. `name` is the engine's name (and the official REST name unless `rest_name`)."""

    name: str
    kind: str  # str | int | float | bool | seed | timesteps | codes | tracks | audio
    default: Any
    help: str
    low: Optional[float] = None
    high: Optional[float] = None
    choices: tuple = ()
    aliases: tuple[str, ...] = ()  # other REST spellings (official aliases, camelCase)
    rest_name: Optional[str] = None
    door_defaults: dict = field(default_factory=dict)
    group: str = "song"  # song | diffusion | task | lm | output
    target: str = "request"  # request (GenerationRequest) | plan (PlanOptions) | output | server
    doors: tuple[str, ...] = DOORS  # the doors that expose it
    # Values meaning "automatic" (the engine or the LM chooses): -1 / 0 for numbers.
    auto: tuple = ()
    # The ComfyUI widget that sets it (released widget names are fixed: saved workflows use them).
    widget: Optional[str] = None

    @property
    def rest(self) -> str:
        return self.rest_name or self.name

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def default_for(self, door: str) -> Any:
        value = self.door_defaults.get(door, self.default)
        return list(value) if isinstance(value, list) else value

    def range_text(self) -> str:
        if self.choices:
            return "one of " + ", ".join(map(str, self.choices))
        if self.low is not None and self.high is not None:
            return f"{self.low:g} to {self.high:g}"
        return ""


def _f(name, kind, default, help, **kw) -> Field:
    return Field(name, kind, default, help, **kw)


FIELDS: tuple[Field, ...] = (
    # ---- song: text and metadata
    _f("caption", "str", "", "style / description of the music", rest_name="prompt", aliases=("caption",), widget="caption"),
    _f("lyrics", "str", "", "lyrics with [Verse] / [Chorus] tags; '[Instrumental]' for none", widget="lyrics"),
    _f("bpm", "int", None, "beats per minute; unset = automatic", low=BPM_MIN, high=BPM_MAX, auto=(0, -1), widget="bpm"),
    _f("key_scale", "str", "", 'key, e.g. "C major", "F# minor" or "Am"; empty = automatic',
       aliases=("keyscale", "keyScale", "key"), widget="keyscale"),
    _f("time_signature", "str", "", "beats per bar: 2, 3, 4 or 6 (4/4 and 6/8 accepted); empty = automatic",
       choices=TIME_SIGNATURES, aliases=("timesignature", "timeSignature"), widget="timesignature"),
    _f("vocal_language", "str", "unknown", "vocal language code (en, zh, ja, ...); unknown = automatic",
       aliases=("vocalLanguage", "language"), door_defaults={"rest": "en"}, widget="language"),
    _f("audio_duration", "float", None, "seconds; -1 or 0 = automatic (the LM's plan with thinking, else 120 s)",
       low=MIN_REQUEST_DURATION, high=MAX_DURATION, auto=(0, -1),
       aliases=("duration", "audioDuration", "target_duration", "targetDuration"), widget="duration"),
    # ---- diffusion
    _f("inference_steps", "int", None, "diffusion steps; unset = the model's own (turbo 8, base / sft 32)",
       low=1, high=200, aliases=("inferenceSteps",), door_defaults={"rest": 8}, group="diffusion", widget="steps"),
    _f("guidance_scale", "float", 7.0, "classifier-free guidance (APG) of base / sft models; turbo ignores it",
       low=0.0, high=30.0, aliases=("guidanceScale",), group="diffusion", widget="guidance"),
    _f("shift", "float", 3.0, "timestep shift (turbo snaps to its trained schedules)", low=0.1, high=10.0,
       group="diffusion", widget="shift"),
    _f("seed", "seed", -1, "-1 = random; a comma list gives one seed per batch item", low=-1, high=MAX_SEED,
       door_defaults={"rest": [-1]}, group="diffusion", widget="seed"),
    _f("infer_method", "str", "ode", "sampler: ode (deterministic) or sde", choices=INFER_METHODS,
       aliases=("inferMethod",), group="diffusion"),
    _f("timesteps", "timesteps", None, "comma list of custom timesteps, decreasing in [0, 1] (overrides steps "
       "and shift)", group="diffusion"),
    _f("cfg_interval_start", "float", 0.0, "guidance applies from this fraction of the schedule", low=0.0, high=1.0,
       aliases=("cfgIntervalStart",), group="diffusion"),
    _f("cfg_interval_end", "float", 1.0, "guidance applies up to this fraction of the schedule", low=0.0, high=1.0,
       aliases=("cfgIntervalEnd",), group="diffusion"),
    _f("use_adg", "bool", False, "angle-based dynamic guidance (ADG) instead of APG, for base / sft models; turbo "
       "ignores it", aliases=("useAdg",), group="diffusion", widget="adg"),
    _f("batch_size", "int", 1, "songs per run (REST unset: ACESTEP_BATCH_SIZE, default 2)", low=1, high=MAX_BATCH, aliases=("batchSize",),
       door_defaults={"rest": None}, group="diffusion", widget="batch_size"),
    # ---- task and audio
    _f("task_type", "str", "text2music", "what to do; extract / lego / complete need a base model",
       choices=TASK_TYPES, aliases=("taskType",), group="task"),
    _f("src_audio", "audio", None, "source audio for cover / repaint / continuation / track tasks",
       rest_name="src_audio_path", aliases=("ctx_audio_path", "sourceAudioPath", "srcAudioPath", "ctxAudioPath"),
       group="task"),
    _f("reference_audio", "audio", None, "timbre reference audio", rest_name="reference_audio_path",
       aliases=("ref_audio_path", "referenceAudioPath", "refAudioPath"), group="task"),
    _f("repainting_start", "float", 0.0, "repaint window start (s); negative pads silence before the source",
       low=-MAX_DURATION, high=MAX_DURATION, aliases=("repaintingStart", "repaint_start"), group="task", widget="start"),
    _f("repainting_end", "float", None, "repaint window end (s); -1 or unset = the end of the source",
       low=-1, high=MAX_DURATION, aliases=("repaintingEnd", "repaint_end"), auto=(-1,), group="task", widget="end"),
    _f("continuation_seconds", "float", None, "continuation: seconds of music to add after the source",
       low=0.2, high=MAX_DURATION, aliases=("continuationSeconds",), group="task", widget="seconds"),
    _f("audio_cover_strength", "float", 1.0, "share of the steps that follow the source's codes (cover)",
       low=0.0, high=1.0, aliases=("audioCoverStrength", "cover_strength"), group="task", widget="strength"),
    _f("cover_noise_strength", "float", 0.0, "start from the source re-noised to t = 1 - s, running only the "
       "remaining steps (0 = off)", low=0.0, high=1.0, aliases=("coverNoiseStrength",), group="task", widget="noise_strength"),
    _f("audio_code_string", "codes", "", "<|audio_code_N|> string (one, or one per batch item): text2music then "
       "follows these codes", aliases=("audioCodeString", "audio_codes"), group="task"),
    _f("chunk_mask_mode", "str", "auto", "repaint mask: auto or explicit", choices=CHUNK_MASK_MODES,
       aliases=("chunkMaskMode",), group="task"),
    _f("repaint_mode", "str", "balanced", "how the kept audio is held outside the window", choices=REPAINT_MODES,
       aliases=("repaintMode",), group="task"),
    _f("repaint_strength", "float", 0.5, "balanced repaint: higher = freer inside the window, softer seams",
       low=0.0, high=1.0, aliases=("repaintStrength",), group="task", widget="strength"),
    _f("track_name", "str", "", "extract / lego: the one track to take out or add (" + ", ".join(TRACK_NAMES) + ")",
       aliases=("trackName",), group="task", widget="track"),
    _f("track_classes", "tracks", "", "complete: the tracks to add (comma list)",
       aliases=("trackClasses", "instruments", "complete_track_classes"), door_defaults={"rest": []}, group="task", widget="tracks"),
    _f("instruction", "str", "", "replace the task's DiT instruction (expert use); empty = the task's own",
       group="task"),
    # ---- planning with the 5 Hz LM (acestep_core.planning.PlanOptions)
    _f("thinking", "bool", False, "plan metas, caption and audio codes with the 5 Hz LM first", group="lm",
       target="plan"),
    _f("sample_mode", "bool", False, "simple mode: the LM writes caption, lyrics and metas from sample_query",
       aliases=("sampleMode",), group="lm", target="plan"),
    _f("sample_query", "str", "", "simple mode: a one-line description of the song",
       aliases=("sampleQuery", "description", "desc"), group="lm", target="plan", widget="description"),
    _f("use_format", "bool", False, "the LM rewrites the caption and lyrics first", aliases=("useFormat", "format"),
       group="lm", target="plan"),
    _f("lm_temperature", "float", 0.85, "LM sampling temperature (0 = greedy)", low=0.0, high=2.0,
       aliases=("lmTemperature",), group="lm", target="plan", widget="lm_temperature"),
    _f("lm_cfg_scale", "float", 2.0, "LM classifier-free guidance (1 = off)", low=1.0, high=10.0,
       aliases=("lmCfgScale",), door_defaults={"rest": 2.5}, group="lm", target="plan", widget="lm_cfg_scale"),
    _f("lm_top_k", "int", 0, "LM top-k (0 = off)", low=0, high=100000, aliases=("lmTopK",), group="lm",
       target="plan", widget="lm_top_k"),
    _f("lm_top_p", "float", 0.9, "LM top-p (1 = off)", low=0.0, high=1.0, aliases=("lmTopP",), group="lm",
       target="plan", widget="lm_top_p"),
    _f("lm_repetition_penalty", "float", 1.0, "LM repetition penalty (1 = off)", low=0.1, high=5.0,
       aliases=("lmRepetitionPenalty",), group="lm", target="plan"),
    _f("lm_negative_prompt", "str", "NO USER INPUT", "caption the LM's guidance steers away from",
       aliases=("lmNegativePrompt",), group="lm", target="plan", widget="lm_negative_prompt"),
    _f("lm_seed", "int", -1, "seed of the LM's sampling (-1 = random; the seed used is reported)", low=-1,
       high=MAX_SEED, aliases=("lmSeed",), group="lm", target="plan", widget="lm_seed"),
    _f("use_cot_caption", "bool", True, "the LM's rewritten caption replaces the caption",
       aliases=("useCotCaption", "cot_caption", "cot-caption"), group="lm", target="plan", widget="use_cot_caption"),
    _f("use_cot_language", "bool", True, "the LM chooses the vocal language when none is given",
       aliases=("useCotLanguage", "cot_language", "cot-language"), group="lm", target="plan"),
    _f("constrained_decoding", "bool", True, "constrain the LM to valid metas and audio codes",
       aliases=("constrainedDecoding", "constrained"), group="lm", target="plan"),
    # ---- output
    _f("audio_format", "str", "flac", "audio file format", choices=CLI_AUDIO_FORMATS, aliases=("audioFormat",),
       door_defaults={"rest": "mp3"}, group="output", target="output", doors=("cli", "rest")),
)

FIELD_BY_NAME: dict[str, Field] = {f.name: f for f in FIELDS}


def spec(name: str) -> Field:
    return FIELD_BY_NAME[name]


def fields_for(target: str, door: str = "engine") -> tuple[Field, ...]:
    return tuple(f for f in FIELDS if f.target == target and door in f.doors)


def choices_for(name: str, door: str) -> tuple:
    if name == "audio_format" and door == "rest":
        return REST_AUDIO_FORMATS
    return spec(name).choices


def widget_range(name: str, **overrides) -> dict:
    """min / max (and the default) for a ComfyUI widget of `name`, from the schema."""
    f = spec(name)
    out = {"min": f.low, "max": f.high}
    out.update(overrides)
    return {k: v for k, v in out.items() if v is not None}


def _cell(value: Any) -> str:
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if value is None or value == []:
        return "unset"
    if value == "":
        return '""'
    return f"`{value}`"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def markdown_table() -> str:
    """The README's parameter table: every field, its name at each door, its defaults and range."""
    lines = ["| field | REST name (aliases) | CLI flag | ComfyUI widget | default: engine, CLI, nodes | default: REST "
             "| range | meaning |", "|---|---|---|---|---|---|---|---|"]
    for f in FIELDS:
        rest = "-"
        if "rest" in f.doors:
            rest = f"`{f.rest}`" + (f" ({', '.join(f'`{a}`' for a in f.aliases[:3])})" if f.aliases else "")
        default = _cell(f.default_for("cli") if "cli" in f.doors else f.default)
        rest_default = _cell(f.default_for("rest")) if "rest" in f.doors else "-"
        if "rest" in f.door_defaults:
            rest_default = f"**{rest_default}**"
        choices = [str(c) for c in choices_for(f.name, "rest" if "cli" not in f.doors else "cli")]
        rest_only = [str(c) for c in choices_for(f.name, "rest") if str(c) not in choices]
        if choices:
            rng = ", ".join(choices) + (f"; REST also {', '.join(rest_only)}" if rest_only else "")
        elif f.low is not None and f.high is not None:
            rng = f"{_number(f.low)} to {_number(f.high)}"
        else:
            rng = ""
        widget = f"`{f.widget}`" if f.widget else "-"
        lines.append(f"| `{f.name}` | {rest} | `{f.flag}` | {widget} | {default} | {rest_default} | {rng} | "
                     f"{f.help.replace('|', '/')} |")
    return "\n".join(lines) + "\n"
