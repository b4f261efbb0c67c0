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

from .. import schema
from ..schema import TIME_SIGNATURES
from ..switches import parse_switch

AUDIO_FORMATS = schema.REST_AUDIO_FORMATS
# Official task names (and the spelling the skill and older clients use) -> engine task_type.
TASK_TYPES = {**{t: t for t in schema.TASK_TYPES}, **schema.TASK_ALIASES}
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
OFFICIAL_UNUSED = ("use_tiled_decode", "useTiledDecode", "lm_model_path", "lm_backend", "allow_lm_batch",
                   "allowLmBatch", "parallel_thinking", "is_format_caption", "isFormatCaption",
                   "constrained_decoding_debug", "constrainedDecodingDebug", "lm_batch_chunk_size",
                   "use_erg_tag", "use_erg_lyric", "use_erg_diffusion")
# Envelope fields: consumed by the routes, not by the request table.
ENVELOPE_FIELDS = ("ai_token", "param_obj") + META_CONTAINERS


class FieldError(ValueError):
    """A request field has a value the server cannot use (HTTP 400)."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


# Integer literals longer than this are read as floats: Python refuses to convert more than 4300
# digits, and no field takes a number anywhere near 10**100 (their range checks then name the field).
MAX_JSON_INT_DIGITS = 100


def _json_int(text: str) -> int | float:
    return int(text) if len(text) <= MAX_JSON_INT_DIGITS else float(text)


def load_json(text: str | bytes) -> Any:
    """json.loads for client text: an absurdly long integer becomes a float (inf past 1e308) that
    the field's own check refuses by name, instead of a ValueError no handler expects."""
    return json.loads(text, parse_int=_json_int)


def brief(value: Any, limit: int = 40) -> str:
    """repr(value), cut short: error messages quote what was sent, not a 5000-digit number."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
    parsed = parse_switch(value)
    if parsed is None:
        raise ValueError(f"expected true or false, got {value!r}")
    return parsed


def to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"expected an integer, got {brief(value)}")
    if isinstance(value, int):
        return value
    number = value
    if not isinstance(value, float):
        text = str(value).strip()
        try:
            return int(text)
        except ValueError:  # also more than 4300 digits: read as a float below
            try:
                number = float(text)
            except ValueError:
                raise ValueError(f"expected an integer, got {brief(value)}") from None
    if not math.isfinite(number):
        raise ValueError(f"expected an integer of sensible size, got {brief(value)}")
    if not number.is_integer():
        raise ValueError(f"expected an integer, got {brief(value)}")
    return int(number)


def to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {brief(value)}")
    try:
        number = float(value) if isinstance(value, (int, float)) else float(str(value).strip())
    except OverflowError:  # an integer beyond float range (JSON allows any number of digits)
        raise ValueError(f"expected a number of sensible size, got {brief(value)}") from None
    except ValueError:
        raise ValueError(f"expected a number, got {brief(value)}") from None
    if not math.isfinite(number):
        raise ValueError(f"expected a finite number, got {brief(value)}")
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
    from ..errors import InputError
    from ..schedules import check_timesteps

    steps = [to_float(p) for p in parts]
    if len(steps) < 2:
        raise ValueError("give at least two comma-separated values, e.g. '0.97,0.5,0'")
    try:
        check_timesteps(steps)  # the order and range rule of every door
    except InputError as exc:
        raise ValueError(str(exc).removeprefix("timesteps ")) from None
    return steps


def _is_code_number(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, str):
        return v.strip().lstrip("-").isdigit()
    return isinstance(v, int) or (isinstance(v, float) and v.is_integer())


def to_code_string(value: Any) -> str | list[str]:
    """One code string; a list of several `<|audio_code_N|>` strings (or of integer lists) stays a
    list: one per batch item. A list of integers is one code per element, written as the engine's
    comma form (codes.codes_from_any), so its range checks speak about each code."""
    if isinstance(value, list):
        if value and all(_is_code_number(v) for v in value):
            return ",".join(str(int(v)) if isinstance(v, float) else str(v).strip() for v in value)
        if len(value) > 1 and all(isinstance(v, str) and "<|audio_code_" in v for v in value):
            return [to_str(v) for v in value]
        if len(value) > 1 and all(isinstance(v, list) for v in value):
            return [to_code_string(v) for v in value]
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
    low, high = schema.spec("audio_duration").low, schema.spec("audio_duration").high
    if not low <= v <= high:
        raise ValueError(f"must be between {low:g} and {high:g} seconds (or -1 for automatic), got {v!r}")
    return v


def check_repaint_end(v: float) -> Optional[float]:
    # The official server reads a false-y end (0 as well as -1) as "to the end of the source".
    return None if v in (-1, 0) else v


def check_seed(seeds: list[int]) -> list[int]:
    for s in seeds:
        if s < -1 or s > schema.MAX_SEED:
            raise ValueError(f"seeds must be -1 (random) or between 0 and {schema.MAX_SEED}, got {s}")
    return seeds


def check_key_scale(v: str) -> str:
    return v.strip()


def check_lm_cfg(v: float) -> float:
    high = schema.spec("lm_cfg_scale").high
    if not 0 <= v <= high:
        raise ValueError(f"must be between 0 and {high:g} (1 or less = no CFG), got {v!r}")
    # The official LM guides only above 1; anything up to 1 is plain sampling.
    return max(v, 1.0) if v else v


def check_lm_top_k(v: int) -> int:
    high = schema.spec("lm_top_k").high
    if v > high:
        raise ValueError(f"must be at most {high} (0 or less = off), got {v!r}")
    return max(v, 0)  # the official server reads 0 or less as "off"


def check_lm_top_p(v: float) -> float:
    if not 0 <= v <= 1:
        raise ValueError(f"must be between 0 and 1, got {v!r}")
    # What the official server runs: it replaces 0 and anything from 1 up with its default, 0.9.
    return v if 0 < v < 1 else schema.spec("lm_top_p").default_for("rest")


def check_language(v: str) -> str:
    from ..prompts import VALID_LANGUAGES

    code = v.strip().lower()
    if code not in VALID_LANGUAGES:
        raise ValueError(f"unsupported language {v!r}; use one of: {' '.join(VALID_LANGUAGES)}")
    return code


# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    name: str  # the official REST name (the key of ReleaseRequest.values)
    convert: Callable[[Any], Any]
    default: Any = None
    aliases: tuple[str, ...] = ()
    check: Optional[Callable[[Any], Any]] = None
    engine_name: Optional[str] = None  # the schema's (GenerationRequest's / PlanOptions') name

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name,) + self.aliases


CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "str": to_str, "audio": to_str, "int": to_int, "float": to_float, "bool": to_bool, "seed": to_seed,
    "timesteps": to_timesteps, "codes": to_code_string, "tracks": to_tracks,
}
# Checks with more to say than the schema's range or choices (REST spellings, -1 meaning automatic).
SPECIAL_CHECKS: dict[str, Optional[Callable[[Any], Any]]] = {
    "task_type": check_task, "time_signature": check_time_signature, "audio_duration": check_duration,
    "repainting_end": check_repaint_end, "seed": check_seed, "key_scale": check_key_scale,
    "lm_cfg_scale": check_lm_cfg, "lm_top_k": check_lm_top_k, "lm_top_p": check_lm_top_p,
    "vocal_language": check_language, "track_name": check_track,
    "instruction": check_instruction, "batch_size": None, "repainting_start": None, "track_classes": None,
    "audio_format": one_of(*AUDIO_FORMATS),
}


def _schema_check(spec: schema.Field) -> Optional[Callable[[Any], Any]]:
    if spec.name in SPECIAL_CHECKS:
        return SPECIAL_CHECKS[spec.name]
    if spec.choices:
        return one_of(*schema.choices_for(spec.name, "rest"))
    if spec.low is not None and spec.high is not None:
        return in_range(spec.low, spec.high)
    return None


def _from_schema(spec: schema.Field) -> Field:
    return Field(spec.rest, CONVERTERS[spec.kind], spec.default_for("rest"), spec.aliases, _schema_check(spec),
                 engine_name=spec.name)


# Fields only this server has: which DiT to run, the official random-seed switch and the analysis modes.
SERVER_FIELDS: tuple[Field, ...] = (
    Field("model", to_str, None, ("model_name", "modelName", "dit_model", "ditModel")),
    Field("use_random_seed", to_bool, True, ("useRandomSeed",)),
    # The analysis modes (server/analysis.py): an answer from the LM instead of audio.
    Field("extract_codes_only", to_bool, False, ("extractCodesOnly",)),
    Field("full_analysis_only", to_bool, False, ("fullAnalysisOnly",)),
    Field("analysis_only", to_bool, False, ("analysisOnly",)),
)

# The /release_task table: every schema field the REST door exposes, then the server's own.
RELEASE_FIELDS: tuple[Field, ...] = tuple(
    _from_schema(spec) for spec in schema.FIELDS if "rest" in spec.doors) + SERVER_FIELDS

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
            if key in OFFICIAL_UNUSED:  # known, so no "did you mean"
                continue
            match = difflib.get_close_matches(key, sorted(KNOWN_NAMES), n=1, cutoff=0.75)
            if match:
                suggestions[label] = match[0]

    scan(raw, "")
    for container in ("param_obj",) + META_CONTAINERS:
        value = raw.get(container)
        if isinstance(value, str) and value.strip().startswith("{"):
            try:
                value = load_json(value)
            except ValueError:
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
            parsed = load_json(value)
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


def parse_fields(sources: list[dict], names: tuple[str, ...], rename: Optional[dict] = None) -> dict[str, Any]:
    """Only the given fields of the table (REST names), only where the client sent them; the same
    converters, checks, aliases and error messages as /release_task. `rename` gives a field another
    REST name for an endpoint that spells it differently (/format_input's `temperature`)."""
    out: dict[str, Any] = {}
    for name in names:
        spec = FIELD_INDEX[name]
        if rename and name in rename:
            spec = Field(rename[name], spec.convert, spec.default, (), spec.check, spec.engine_name)
        used_name, value = _lookup(spec, sources)
        if used_name is None:
            continue
        try:
            typed = spec.convert(value)
            check_text_length(spec.name, typed)
            out[name] = spec.check(typed) if spec.check is not None else typed
        except ValueError as exc:
            raise FieldError(used_name, str(exc)) from None
    return out


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
    if values["cfg_interval_start"] > values["cfg_interval_end"]:
        raise FieldError("cfg_interval_start", "must not exceed cfg_interval_end")
    # The window only matters to the tasks that have one (the official server ignores it elsewhere).
    if (values["task_type"] in schema.WINDOW_TASKS and values["repainting_end"] is not None
            and values["repainting_end"] <= values["repainting_start"]):
        raise FieldError("repainting_end", "must be greater than repainting_start (or -1 for the end)")
    # An explicit seed means "use it" unless the client also asked for a random one explicitly
    # (the skill sends use_random_seed=false together with --seed).
    if "seed" in explicit and "use_random_seed" not in explicit:
        values["use_random_seed"] = False
    return ReleaseRequest(values=values, explicit=frozenset(explicit))
