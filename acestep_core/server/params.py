"""Request parsing for /release_task: one table of fields, their aliases, defaults and checks.

Values may arrive as JSON types or as form strings, at the top level, inside `param_obj` (a JSON
object or JSON string) or inside a `metas` / `metadata` / `user_metadata` object, exactly like the
official server. Unknown fields are accepted (clients send options meant for other servers) and
reported back by `ignored_fields`, with a "did you mean" for near misses; a known field with a bad
value is rejected with `FieldError`, which names the field. Text fields have a length limit
(MAX_TEXT_CHARS): the encoders truncate far below it, so more is always a mistake.
"""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

AUDIO_FORMATS = ("mp3", "wav", "flac", "opus", "wav32")
# Official task names (and the spelling the skill and older clients use) -> engine task_type.
TASK_TYPES = {
    "text2music": "text2music",
    "cover": "cover",
    "repaint": "repaint",
    "repainting": "repaint",
    "continuation": "continuation",
    "continue": "continuation",
    "extend": "continuation",
    "extract": "extract",
    "lego": "lego",
    "complete": "complete",
}
INFER_METHODS = ("ode", "sde")
REPAINT_MODES = ("balanced", "aggressive", "conservative")
TIME_SIGNATURES = ("2", "3", "4", "6")
META_CONTAINERS = ("metas", "meta", "metadata", "user_metadata", "userMetadata")
# Characters per text field. The text encoder reads at most 256 caption and 2048 lyric tokens and the
# LM's context is a few thousand tokens; these limits leave room for every script and refuse only junk.
MAX_TEXT_CHARS = {
    "prompt": 8192,
    "lyrics": 32768,
    "sample_query": 8192,
    "lm_negative_prompt": 8192,
    "instruction": 4096,
    "model": 256,
    "src_audio_path": 4096,
    "reference_audio_path": 4096,
    # 600 s x 5 codes per second x len("<|audio_code_63999|>")
    "audio_code_string": 3000 * 20 + 1024,
}
# Fields of the official request this server reads but does not act on (their official defaults are
# what it does anyway, or they pick a backend it does not have); reported as ignored, never an error.
OFFICIAL_UNUSED = ("use_tiled_decode", "lm_model_path", "lm_backend", "allow_lm_batch", "analysis_only",
                   "full_analysis_only", "is_format_caption", "lm_batch_chunk_size", "use_erg_tag",
                   "use_erg_lyric", "use_erg_diffusion")
# Envelope fields: consumed by the routes, not by the request table.
ENVELOPE_FIELDS = ("ai_token", "param_obj") + META_CONTAINERS
_TRUE = {"1", "true", "yes", "y", "on"}
_FALSE = {"0", "false", "no", "n", "off"}


class FieldError(ValueError):
    """A request field has a value the server cannot use (HTTP 400)."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


# ---------------------------------------------------------------------------------------------
# Converters: raw value -> typed value, raising ValueError with a short reason.


def to_str(value: Any) -> str:
    if isinstance(value, (dict, list)):
        raise ValueError("expected a string")
    return str(value)


def to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"expected an integer, got {value!r}")
        return int(value)
    text = str(value).strip()
    try:
        return int(text)
    except ValueError:
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"expected an integer, got {value!r}") from None
        if not number.is_integer():
            raise ValueError(f"expected an integer, got {value!r}") from None
        return int(number)


def to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    try:
        number = float(value) if isinstance(value, (int, float)) else float(str(value).strip())
    except ValueError:
        raise ValueError(f"expected a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"expected a finite number, got {value!r}")
    return number


def to_seed(value: Any) -> list[int]:
    """A seed is an int or a comma list of ints (one per batch item)."""
    if isinstance(value, list):
        parts = value
    elif isinstance(value, str) and "," in value:
        parts = [p for p in (s.strip() for s in value.split(",")) if p]
    else:
        parts = [value]
    return [to_int(p) for p in parts]


def to_timesteps(value: Any) -> list[float]:
    parts = value if isinstance(value, list) else [p for p in str(value).split(",") if p.strip()]
    steps = [to_float(p) for p in parts]
    if len(steps) < 2:
        raise ValueError("give at least two comma-separated values, e.g. '0.97,0.5,0'")
    if any(not 0.0 <= t <= 1.0 for t in steps):
        raise ValueError("every timestep must lie in [0, 1]")
    if any(b >= a for a, b in zip(steps, steps[1:])):
        raise ValueError("timesteps must be strictly decreasing")
    return steps


def to_code_string(value: Any) -> str | list[str]:
    """One code string; a list of several `<|audio_code_N|>` strings stays a list: one per batch item."""
    if isinstance(value, list):
        if len(value) > 1 and all(isinstance(v, str) and "<|audio_code_" in v for v in value):
            return [to_str(v) for v in value]
        return "".join(to_str(v) for v in value)
    return to_str(value)


# ---------------------------------------------------------------------------------------------
# Validators: typed value -> typed value (may normalise), raising ValueError.


def in_range(lo: float, hi: float) -> Callable[[Any], Any]:
    def check(v):
        if not lo <= v <= hi:
            raise ValueError(f"must be between {lo:g} and {hi:g}, got {v!r}")
        return v

    return check


def one_of(*choices: str, mapping: Optional[dict] = None) -> Callable[[str], str]:
    allowed = tuple(mapping) if mapping else choices

    def check(v: str):
        key = v.strip().lower()
        if key not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}, got {v!r}")
        return mapping[key] if mapping else key

    return check


def check_task(v: str) -> str:
    return one_of(mapping=TASK_TYPES)(v.strip().lower())


def to_tracks(value: Any) -> list[str]:
    """Track names: a list, or one string separated by ',' or '|' (normalised and checked)."""
    from ..errors import InputError
    from ..request import parse_tracks

    if isinstance(value, list):
        value = [to_str(v) for v in value]
    try:
        return parse_tracks(value if isinstance(value, list) else to_str(value), "track")
    except InputError as exc:
        raise ValueError(str(exc).split(": ", 1)[1]) from None


def check_track(name: str) -> str:
    tracks = to_tracks(name)
    if len(tracks) > 1:
        raise ValueError(f"names one track, got {name!r}; use task_type 'complete' with track_classes for several")
    return tracks[0] if tracks else ""


def check_instruction(text: str) -> str:
    from ..prompts import TEXT2MUSIC_INSTRUCTION

    # The official default instruction means "the task's own", as in the official server.
    text = text.strip()
    return "" if text == TEXT2MUSIC_INSTRUCTION else text


def check_time_signature(v: str) -> str:
    text = v.strip()
    if not text:
        return ""
    # "4/4", "3/4", "6/8" -> the numerator, as the LM and the official server store it.
    numerator = text.split("/", 1)[0].strip()
    if numerator not in TIME_SIGNATURES:
        raise ValueError(f"must be one of 2, 3, 4, 6 (or 2/4, 3/4, 4/4, 6/8), got {v!r}")
    return numerator


def check_duration(v: float) -> Optional[float]:
    if v <= 0:  # -1 / 0 = let the engine or the LM choose
        return None
    if not 10.0 <= v <= 600.0:
        raise ValueError(f"must be between 10 and 600 seconds (or -1 for automatic), got {v!r}")
    return v


def check_repaint_end(v: float) -> Optional[float]:
    return None if v == -1 else v


def check_seed(seeds: list[int]) -> list[int]:
    for s in seeds:
        if s < -1 or s > 2**32 - 1:
            raise ValueError(f"seeds must be -1 (random) or between 0 and 4294967295, got {s}")
    return seeds


def check_key_scale(v: str) -> str:
    return v.strip()


def check_lm_cfg(v: float) -> float:
    if not (v == 0 or 1.0 <= v <= 10.0):
        raise ValueError(f"must be 0 or between 1 and 10 (1 = no CFG), got {v!r}")
    return v


def check_language(v: str) -> str:
    from ..prompts import VALID_LANGUAGES

    code = v.strip().lower()
    if code not in VALID_LANGUAGES:
        raise ValueError(f"unsupported language {v!r}; use one of: {' '.join(VALID_LANGUAGES)}")
    return code


# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    name: str
    convert: Callable[[Any], Any]
    default: Any = None
    aliases: tuple[str, ...] = ()
    check: Optional[Callable[[Any], Any]] = None

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name,) + self.aliases


RELEASE_FIELDS: tuple[Field, ...] = (
    # text and modes
    Field("prompt", to_str, "", ("caption",)),
    Field("lyrics", to_str, ""),
    Field("thinking", to_bool, False),
    Field("sample_mode", to_bool, False, ("sampleMode",)),
    Field("sample_query", to_str, "", ("sampleQuery", "description", "desc")),
    Field("use_format", to_bool, False, ("useFormat", "format")),
    Field("model", to_str, None, ("model_name", "modelName", "dit_model", "ditModel")),
    # metadata
    Field("bpm", to_int, None, (), in_range(30, 300)),
    Field("key_scale", to_str, "", ("keyscale", "keyScale", "key"), check_key_scale),
    Field("time_signature", to_str, "", ("timesignature", "timeSignature"), check_time_signature),
    Field("audio_duration", to_float, None,
          ("duration", "audioDuration", "target_duration", "targetDuration"), check_duration),
    Field("vocal_language", to_str, "en", ("vocalLanguage", "language"), check_language),
    # DiT
    Field("inference_steps", to_int, 8, ("inferenceSteps",), in_range(1, 200)),
    Field("guidance_scale", to_float, 7.0, ("guidanceScale",), in_range(0.0, 30.0)),
    Field("use_random_seed", to_bool, True, ("useRandomSeed",)),
    Field("seed", to_seed, [-1], (), check_seed),
    Field("batch_size", to_int, None, ("batchSize",)),
    Field("shift", to_float, 3.0, (), in_range(1.0, 5.0)),
    Field("infer_method", to_str, "ode", ("inferMethod",), one_of(*INFER_METHODS)),
    Field("timesteps", to_timesteps, None),
    Field("use_adg", to_bool, False, ("useAdg",)),
    Field("cfg_interval_start", to_float, 0.0, ("cfgIntervalStart",), in_range(0.0, 1.0)),
    Field("cfg_interval_end", to_float, 1.0, ("cfgIntervalEnd",), in_range(0.0, 1.0)),
    # task and audio
    Field("task_type", to_str, "text2music", ("taskType",), check_task),
    Field("reference_audio_path", to_str, None,
          ("ref_audio_path", "referenceAudioPath", "refAudioPath")),
    Field("src_audio_path", to_str, None,
          ("ctx_audio_path", "sourceAudioPath", "srcAudioPath", "ctxAudioPath")),
    Field("repainting_start", to_float, 0.0, ("repaintingStart", "repaint_start")),
    Field("repainting_end", to_float, None, ("repaintingEnd", "repaint_end"), check_repaint_end),
    Field("audio_cover_strength", to_float, 1.0, ("audioCoverStrength", "cover_strength"), in_range(0.0, 1.0)),
    Field("cover_noise_strength", to_float, 0.0, ("coverNoiseStrength",), in_range(0.0, 1.0)),
    Field("audio_code_string", to_code_string, "", ("audioCodeString", "audio_codes")),
    Field("chunk_mask_mode", to_str, "auto", ("chunkMaskMode",)),
    Field("repaint_mode", to_str, "balanced", ("repaintMode",), one_of(*REPAINT_MODES)),
    Field("repaint_strength", to_float, 0.5, ("repaintStrength",), in_range(0.0, 1.0)),
    Field("track_name", to_str, "", ("trackName",), check_track),
    Field("track_classes", to_tracks, [], ("trackClasses", "instruments", "complete_track_classes")),
    Field("instruction", to_str, "", (), check_instruction),
    # output
    Field("audio_format", to_str, "mp3", ("audioFormat",), one_of(*AUDIO_FORMATS)),
    # 5 Hz LM
    Field("lm_temperature", to_float, 0.85, ("lmTemperature",), in_range(0.0, 2.0)),
    Field("lm_cfg_scale", to_float, 2.5, ("lmCfgScale",), check_lm_cfg),
    Field("lm_top_k", to_int, None, ("lmTopK",), in_range(0, 100000)),
    Field("lm_top_p", to_float, 0.9, ("lmTopP",), in_range(0.0, 1.0)),
    Field("lm_repetition_penalty", to_float, 1.0, ("lmRepetitionPenalty",), in_range(0.1, 5.0)),
    Field("lm_negative_prompt", to_str, "NO USER INPUT", ("lmNegativePrompt",)),
    Field("lm_seed", to_int, -1, ("lmSeed",), in_range(-1, 2**32 - 1)),
    Field("use_cot_caption", to_bool, True, ("cot_caption", "cot-caption")),
    Field("use_cot_language", to_bool, True, ("cot_language", "cot-language")),
    Field("constrained_decoding", to_bool, True, ("constrainedDecoding", "constrained")),
)

FIELD_INDEX = {f.name: f for f in RELEASE_FIELDS}


@dataclass
class ReleaseRequest:
    """A validated /release_task request; attribute names are the canonical field names."""

    values: dict[str, Any]
    explicit: frozenset[str] = field(default_factory=frozenset)
    # Files uploaded with the request (saved by the server): field name -> path.
    uploads: dict[str, str] = field(default_factory=dict)
    # The server's LoRA / LoKr state when the job was queued (ScaledAdapter list).
    adapters: list = field(default_factory=list)
    # What the server changed (clamps to its memory decision), reported with the job.
    notices: list[str] = field(default_factory=list)
    # This server's duration limit; also applied to a duration the LM plans.
    max_duration_s: Optional[float] = None

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def to_dict(self) -> dict:
        return dict(self.values)

    def to_record(self) -> dict:
        """What the job store keeps: enough to describe and audit the job after a restart."""
        return {"values": dict(self.values), "explicit": sorted(self.explicit), "uploads": dict(self.uploads),
                "notices": list(self.notices), "max_duration_s": self.max_duration_s}

    @classmethod
    def from_record(cls, record: dict) -> "ReleaseRequest":
        return cls(values=dict(record.get("values") or {}), explicit=frozenset(record.get("explicit") or ()),
                   uploads=dict(record.get("uploads") or {}), notices=list(record.get("notices") or []),
                   max_duration_s=record.get("max_duration_s"))


KNOWN_NAMES = frozenset(name for spec in RELEASE_FIELDS for name in spec.names)


def ignored_fields(raw: dict, consumed: tuple[str, ...] = ()) -> tuple[list[str], dict[str, str]]:
    """Fields of a request that nothing reads, and a "did you mean" for the near misses.

    Looks at the top level and inside `param_obj` / the metadata container, as the parser does;
    names inside a container are reported as `container.name`.
    """
    known = KNOWN_NAMES | set(ENVELOPE_FIELDS) | set(consumed)
    ignored: list[str] = []
    suggestions: dict[str, str] = {}

    def scan(source: Any, prefix: str) -> None:
        if not isinstance(source, dict):
            return
        for key in source:
            if not isinstance(key, str) or key in known:
                continue
            label = prefix + key
            ignored.append(label)
            if key in OFFICIAL_UNUSED:
                continue
            match = difflib.get_close_matches(key, sorted(KNOWN_NAMES), n=1, cutoff=0.75)
            if match:
                suggestions[label] = match[0]

    scan(raw, "")
    for container in ("param_obj",) + META_CONTAINERS:
        value = raw.get(container)
        if isinstance(value, str) and value.strip().startswith("{"):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                continue
        scan(value, container + ".")
    return ignored, suggestions


def check_text_length(name: str, value: Any) -> None:
    """ValueError when a text field is longer than MAX_TEXT_CHARS allows."""
    limit = MAX_TEXT_CHARS.get(name)
    if limit is not None and isinstance(value, str) and len(value) > limit:
        raise ValueError(f"is {len(value)} characters long; the limit is {limit}")


def parse_json_object(value: Any, field_name: str) -> dict:
    if value is None or value == "":
        return {}
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as exc:
            raise FieldError(field_name, f"is not valid JSON ({exc.msg})") from None
        if isinstance(parsed, dict):
            return parsed
    raise FieldError(field_name, "must be a JSON object")


def _sources(raw: dict) -> list[dict]:
    sources = [raw, parse_json_object(raw.get("param_obj"), "param_obj")]
    for key in META_CONTAINERS:
        if raw.get(key):
            sources.append(parse_json_object(raw[key], key))
            break
    return sources


def _lookup(spec: Field, sources: list[dict]) -> tuple[Optional[str], Any]:
    for source in sources:
        for alias in spec.names:
            value = source.get(alias)
            # An empty form field means "not given", as in the official server.
            if value is not None and not (isinstance(value, str) and value.strip() == ""):
                return alias, value
    return None, None


def parse_release_request(raw: dict, *, default_batch_size: int = 2, max_batch_size: int = 8) -> ReleaseRequest:
    if not isinstance(raw, dict):
        raise FieldError("body", "must be a JSON object")
    sources = _sources(raw)
    values: dict[str, Any] = {}
    explicit = set()
    for spec in RELEASE_FIELDS:
        used_name, value = _lookup(spec, sources)
        if used_name is None:
            values[spec.name] = list(spec.default) if isinstance(spec.default, list) else spec.default
            continue
        try:
            typed = spec.convert(value)
            check_text_length(spec.name, typed)
            if spec.check is not None:
                typed = spec.check(typed)
        except ValueError as exc:
            raise FieldError(used_name, str(exc)) from None
        values[spec.name] = typed
        explicit.add(spec.name)

    if values["batch_size"] is None:
        values["batch_size"] = default_batch_size
    if not 1 <= values["batch_size"] <= max_batch_size:
        raise FieldError("batch_size", f"must be between 1 and {max_batch_size}, got {values['batch_size']}")
    if values["use_adg"]:
        raise FieldError("use_adg", "adaptive dual guidance is not supported by this server; send false")
    if values["cfg_interval_start"] > values["cfg_interval_end"]:
        raise FieldError("cfg_interval_start", "must not exceed cfg_interval_end")
    if values["repainting_end"] is not None and values["repainting_end"] <= values["repainting_start"]:
        raise FieldError("repainting_end", "must be greater than repainting_start (or -1 for the end)")
    # An explicit seed means "use it" unless the client also asked for a random one explicitly
    # (the skill sends use_random_seed=false together with --seed).
    if "seed" in explicit and "use_random_seed" not in explicit:
        values["use_random_seed"] = False
    return ReleaseRequest(values=values, explicit=frozenset(explicit))
