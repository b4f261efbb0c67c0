"""Widget definitions shared by several nodes, and conversion of their values.

Widget order is part of every saved workflow (widgets_values is positional): inputs may only
ever be appended at the end of a node, never inserted or reordered.
"""

from __future__ import annotations

from typing import Optional

from ..acestep_core import schema
from ..acestep_core.schedules import BASE_MAX_STEPS, BASE_MIN_STEPS, TURBO_STEPS
from .host import io

AUTO = "auto"
CATEGORY = "audio/ACE-Step 1.5 Studio"
MODEL = io.Custom("ACE15S_MODEL")
PLAN = io.Custom("ACE15S_PLAN")

LANGUAGES = (
    "ar az bg bn ca cs da de el en es fa fi fr he hi hr ht hu id is it ja ko la lt ms ne nl no pa "
    "pl pt ro ru sa sk sr sv sw ta te th tl tr uk ur vi yue zh unknown"
).split()
TIME_SIGNATURES = ["2", "3", "4", "6"]
KEYSCALES = [f"{note} {mode}" for mode in ("major", "minor") for note in
             ("C", "C#", "Db", "D", "D#", "Eb", "E", "F", "F#", "Gb", "G", "G#", "Ab", "A", "A#", "Bb", "B")]
# Ranges come from the engine's request schema (acestep_core/schema.py): a widget cannot offer a value
# the engine refuses. Widgets show 0 / auto where the schema's field is automatic.
MAX_DURATION = schema.MAX_DURATION
SEED_MAX = schema.MAX_SEED
MAX_BATCH = schema.MAX_BATCH


def schema_range(name: str, **overrides) -> dict:
    """min / max of the widget for the schema field `name` (overrides: where the widget starts at 0 = auto)."""
    return schema.widget_range(name, **overrides)


def caption_input(default: str = ""):
    return io.String.Input("caption", multiline=True, default=default,
                           tooltip="Style description: genre, instruments, mood, vocals.")


def lyrics_input(default: str = ""):
    return io.String.Input("lyrics", multiline=True, default=default,
                           tooltip="Lyrics with [Verse] / [Chorus] tags; '[Instrumental]' for no vocals.")


def meta_inputs(auto_tip: str, duration_tip: Optional[str] = None) -> list:
    """duration, bpm, keyscale, timesignature, language - each with an auto setting."""
    return [
        io.Float.Input("duration", default=0.0, **schema_range("audio_duration", min=0.0), step=1.0,
                       tooltip=f"Seconds. 0 = auto ({duration_tip or auto_tip})."),
        io.Int.Input("bpm", default=0, **schema_range("bpm", min=0), tooltip=f"Beats per minute. 0 = auto ({auto_tip})."),
        io.Combo.Input("keyscale", options=[AUTO, *KEYSCALES], default=AUTO, tooltip=f"Key. auto = {auto_tip}."),
        io.Combo.Input("timesignature", options=[AUTO, *TIME_SIGNATURES], default=AUTO,
                       tooltip=f"Beats per bar. auto = {auto_tip}."),
        io.Combo.Input("language", options=[AUTO, *LANGUAGES], default=AUTO,
                       tooltip=f"Vocal language. auto = {auto_tip}."),
    ]


def lm_sampling_inputs(temperature: float = 0.85, cfg_scale: float = 2.0) -> list:
    return [
        io.Float.Input("lm_temperature", default=temperature, **schema_range("lm_temperature"), step=0.05,
                       tooltip="LM sampling temperature (0 = greedy)."),
        io.Float.Input("lm_cfg_scale", default=cfg_scale, **schema_range("lm_cfg_scale"), step=0.1,
                       tooltip="LM classifier-free guidance scale (1 = off)."),
        io.Int.Input("lm_top_k", default=0, **schema_range("lm_top_k"), tooltip="Top-k (0 = off)."),
        io.Float.Input("lm_top_p", default=0.9, **schema_range("lm_top_p"), step=0.01, tooltip="Top-p (1 = off)."),
        io.String.Input("lm_negative_prompt", default="NO USER INPUT",
                        tooltip="Caption the LM's guidance steers away from."),
        io.Int.Input("lm_seed", default=0, min=0, max=SEED_MAX, control_after_generate=True,
                     tooltip="Seed of the LM's sampling (separate from the DiT seed)."),
    ]


def adg_input():
    """Appended last to every generation node (optional: prompts saved before it still validate)."""
    return io.Boolean.Input("adg", default=schema.spec("use_adg").default, optional=True,
                            tooltip="Base / SFT: angle-based dynamic guidance (ADG) instead of APG. Ignored by "
                                    "turbo models.")


def dit_inputs(steps: int = TURBO_STEPS) -> list:
    if steps == TURBO_STEPS:
        steps_tip = (f"Diffusion steps. Turbo models always run their fixed {TURBO_STEPS}-step schedule and ignore "
                     f"this. Base / SFT models use it: set {BASE_MIN_STEPS}-{BASE_MAX_STEPS} for them, the default "
                     f"{TURBO_STEPS} is turbo's count and too few (the node then says so).")
    else:
        steps_tip = (f"Diffusion steps ({BASE_MIN_STEPS}-{BASE_MAX_STEPS} for the base model this node needs). "
                     f"Turbo models run their fixed {TURBO_STEPS}-step schedule and ignore this.")
    return [
        io.Int.Input("seed", default=0, min=0, max=SEED_MAX, control_after_generate=True,
                     tooltip="Seed of the initial noise (batch item i uses seed + i)."),
        io.Int.Input("steps", default=steps, **schema_range("inference_steps"), tooltip=steps_tip),
        io.Float.Input("shift", default=schema.spec("shift").default, **schema_range("shift"), step=0.1,
                       tooltip="Timestep shift. Base / SFT: 1-3. Turbo: 3 (turbo rounds it to 1, 2 or 3)."),
        io.Float.Input("guidance", default=schema.spec("guidance_scale").default, **schema_range("guidance_scale"), step=0.1,
                       tooltip="Guidance scale (APG). Ignored by turbo models."),
    ]


# ------------------------------------------------------------------ validation
# How ComfyUI treats a node's validate_inputs (execution.validate_inputs):
# - it skips its own min / max / list checks for every input validate_inputs names (for all of them
#   with **kwargs), so a named input's range is the node's to check;
# - it files whatever validate_inputs returns under *every* input it names, so a message about one
#   input shows up under all of them;
# - it passes None for an input fed by a link, and the raw value of one that failed its own type
#   conversion (it has already reported that one as invalid_input_type);
# - an exception raised there replaces the whole node's report.
# So each validate_inputs names one input, whose rule ComfyUI cannot express (bpm: 0 or 30-300), and
# plain ranges stay ComfyUI's (each message lands on its input). Rules across two inputs (a window's
# end after its start) and values that came over a link are checked when the node runs.

def as_number(value) -> Optional[float]:
    """`value` as a number; None when it is None or not a number (ComfyUI reports the wrong type itself)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number else None  # NaN: not a number either


def range_issue(node: str, name: str, value, low: float, high: float) -> Optional[str]:
    number = as_number(value)
    if number is not None and not low <= number <= high:
        return f"{node}: {name} must be from {low:g} to {high:g}, got {number:g}"
    return None


def window_range_issue(node: str, start, end) -> Optional[str]:
    """A start / end window's widgets: each from 0 to the longest song."""
    return range_issue(node, "start", start, 0.0, MAX_DURATION) or range_issue(node, "end", end, 0.0, MAX_DURATION)


def duration_issue(node: str, duration) -> Optional[str]:
    """The duration widget: 0 = auto, otherwise what the engine accepts."""
    number = as_number(duration)
    if number is not None and number != 0 and not schema.MIN_DURATION <= number <= MAX_DURATION:
        return (f"{node}: duration must be 0 (auto) or from {schema.MIN_DURATION:g} to {MAX_DURATION:g} seconds, "
                f"got {number:g}")
    return None


def bpm_issue(node: str, bpm) -> Optional[str]:
    """The bpm widget: 0 = auto, otherwise the LM's tempo range."""
    number = as_number(bpm)
    bpm_range = schema.spec("bpm")
    if number is not None and number != 0 and not bpm_range.low <= number <= bpm_range.high:
        return f"{node}: bpm must be 0 (auto) or from {bpm_range.low} to {bpm_range.high}, got {number:g}"
    return None


def meta_issue(node: str, duration, bpm) -> Optional[str]:
    """duration and bpm together, for execute (validate_inputs checks bpm; ComfyUI the duration range)."""
    return duration_issue(node, duration) or bpm_issue(node, bpm)


def raise_issue(issue: Optional[str]) -> None:
    """execute's half of a validate_inputs check (values that came over a link were not checked)."""
    if issue:
        from ..acestep_core.errors import InputError

        raise InputError(issue)


# ------------------------------------------------------------------ value conversion

def opt_duration(value) -> Optional[float]:
    return float(value) if value and float(value) > 0 else None


def opt_bpm(value) -> Optional[int]:
    return int(value) if value and int(value) > 0 else None


def opt_choice(value) -> Optional[str]:
    return None if value in (None, "", AUTO) else str(value)


def lm_sampling(kwargs: dict):
    """The LM sampling of a node's lm_* widgets (the engine's PlanOptions, so names and rules match)."""
    from ..acestep_core.planning import PlanOptions

    return PlanOptions(lm_temperature=float(kwargs["lm_temperature"]), lm_cfg_scale=float(kwargs["lm_cfg_scale"]),
                       lm_top_k=int(kwargs["lm_top_k"]), lm_top_p=float(kwargs["lm_top_p"]),
                       lm_negative_prompt=str(kwargs["lm_negative_prompt"]), lm_seed=int(kwargs["lm_seed"])).sampling()
