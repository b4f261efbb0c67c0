"""The one planning step: sample -> format -> think -> metas, and the one rule for how a plan fills a request.

Every door runs a song through here before the DiT: the CLI (`generate --thinking`, ...), the REST
jobs (`thinking`, `use_format`, `sample_mode` / `sample_query`) and, through `fill_request`, the
ComfyUI Text2Music node fed by an LM node. `generate()` then gets a resolved request.

The rule (`fill_request`), matching the official handler (docs/lm.md#how-a-plan-fills-a-request):

- caption and lyrics: the plan's text replaces the request's. The LM only rewrites text when it was
  asked to (`use_cot_caption`, `use_format`, simple mode); otherwise the plan carries the user's own.
- bpm, key_scale, time_signature, audio_duration and vocal_language: what the user set wins; the plan
  fills only what was left automatic (empty, None or "unknown"). The LM's constrained decoder is also
  given the user's values, so it writes the same ones back.
- audio codes: codes the user gave win; the plan's codes are used by text2music only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable, Iterable, Optional

from . import schema
from .plan import Plan

# The official pipeline skips the LM where the source audio sets the song; for lego / complete it plans
# metadata only (its codes would replace the source those tasks build on).
LM_SKIPPED_TASKS = ("cover", "repaint", "continuation", "extract")
LM_METAS_ONLY_TASKS = ("lego", "complete")
METAS = ("bpm", "key_scale", "time_signature", "audio_duration", "vocal_language")
INSTRUMENTAL_WORDS = ("instrumental", "no vocals", "no vocal", "without vocals", "no singing")


@dataclass
class PlanOptions:
    """What the 5 Hz LM is asked to do before the DiT runs; names and defaults from the schema."""

    thinking: bool = False
    sample_mode: bool = False
    sample_query: str = ""
    use_format: bool = False
    lm_temperature: float = 0.85
    lm_cfg_scale: float = 2.0
    lm_top_k: int = 0
    lm_top_p: float = 0.9
    lm_repetition_penalty: float = 1.0
    lm_negative_prompt: str = "NO USER INPUT"
    lm_seed: int = -1
    use_cot_caption: bool = True
    use_cot_language: bool = True
    constrained_decoding: bool = True
    # thinking off: the LM may still fill the metas the user left automatic (the official server does
    # this when it has an LM; the CLI does not load one unless asked).
    fill_missing_metas: bool = False
    # The longest song this machine may make (the memory decision); the LM plans no longer one.
    max_duration: Optional[float] = None

    @classmethod
    def from_values(cls, values: dict, door: str = "engine", **extra) -> "PlanOptions":
        """From schema-named values (a parsed REST request, argparse's namespace as a dict, ...)."""
        names = {f.name for f in fields(cls)}
        kwargs = {f.name: values.get(f.name, f.default_for(door)) for f in schema.fields_for("plan", door)
                  if f.name in names}
        if kwargs.get("lm_top_k") is None:
            kwargs["lm_top_k"] = 0
        kwargs.update(extra)
        return cls(**kwargs)

    def sampling(self):
        from .lm.sampling import LMSampling

        return LMSampling(temperature=self.lm_temperature, cfg_scale=self.lm_cfg_scale, top_k=self.lm_top_k or 0,
                          top_p=self.lm_top_p, repetition_penalty=self.lm_repetition_penalty,
                          negative_prompt=self.lm_negative_prompt, seed=self.lm_seed)

    def validate(self) -> None:
        """The LM's sampling values and the simple-mode text, checked before any model loads (InputError)."""
        from .values import check_text

        self.sample_query = check_text("sample_query", self.sample_query)
        check_text("lm_negative_prompt", self.lm_negative_prompt)
        self.sampling().validate()

    def wants_lm(self, task_type: str) -> bool:
        """Whether this request must have the LM (fill_missing_metas alone does not: it is optional)."""
        return bool(self.sample_mode or self.sample_query.strip() or self.use_format
                    or (self.thinking and task_type not in LM_SKIPPED_TASKS))


@dataclass
class PlanReport:
    """What the LM did: each stage's plan, timings, notices; recorded beside the song."""

    stages: list[tuple[str, Plan]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)

    @property
    def used_lm(self) -> bool:
        return bool(self.stages)

    @property
    def think_plan(self) -> Optional[Plan]:
        return next((plan for stage, plan in self.stages if stage == "think"), None)

    def written_text(self, caption: str, lyrics: str) -> tuple[str, str]:
        """The caption and lyrics the user's text became: what simple mode or format wrote over it,
        else the text itself (the chain of thought's caption is the DiT's, not the user's)."""
        for stage, plan in self.stages:
            if stage in ("sample", "format"):
                caption, lyrics = plan.caption or caption, plan.lyrics or lyrics
        return caption, lyrics

    @property
    def lm_seed(self) -> Optional[int]:
        return self.stages[-1][1].lm_seed if self.stages else None


def is_automatic(name: str, value: Any) -> bool:
    """Whether a request field was left for the engine or the LM to choose."""
    if value is None:
        return True
    if name == "vocal_language":
        return str(value).strip().lower() in ("", "unknown")
    if name in ("bpm", "audio_duration"):
        return float(value) <= 0
    if isinstance(value, str):
        return not value.strip()
    return False


def set_metas(request) -> set[str]:
    """The metas of `request` that are not automatic: what a door without its own record counts as typed."""
    return {name for name in METAS if not is_automatic(name, getattr(request, name))}


def fill_request(request, plan: Optional[Plan], typed: Optional[Iterable[str]] = None):
    """The request with the plan applied by the one rule (module docstring).

    `typed` names the metas the user set; by default every meta that is not automatic counts as set.
    A door whose defaults are not "automatic" (the REST API's vocal_language "en") passes the fields
    its client actually sent."""
    if plan is None:
        return request
    typed = set(typed) if typed is not None else set_metas(request)
    updates: dict[str, Any] = {}
    if plan.caption:
        updates["caption"] = plan.caption
    if plan.lyrics:
        updates["lyrics"] = plan.lyrics
    for name in METAS:
        value = getattr(plan, name)
        if name not in typed and not is_automatic(name, value):
            updates[name] = _meta_value(name, value)
    if plan.audio_codes and not request.audio_code_string and request.task_type == "text2music":
        updates["audio_code_string"] = list(plan.audio_codes)
    # The plan stays on the request for the record; applying it again changes nothing.
    return replace(request, plan=plan, **updates)


def _meta_value(name: str, value):
    if name == "bpm":
        return int(value)
    if name == "audio_duration":
        return float(value)
    if name == "time_signature":
        return str(value).split("/", 1)[0]
    return str(value)


def wants_instrumental(query: str) -> bool:
    text = query.lower()
    return any(word in text for word in INSTRUMENTAL_WORDS)


def _given_metas(request, typed: set[str]) -> dict:
    """The metas the LM's constrained decoder is told (the user's), in the planner's keyword names."""
    def value(name):
        return getattr(request, name) if name in typed and not is_automatic(name, getattr(request, name)) else None

    return dict(bpm=value("bpm"), keyscale=value("key_scale") or None, timesignature=value("time_signature") or None,
                duration=value("audio_duration"), language=value("vocal_language") or None)


def plan_request(request, options: PlanOptions, planner: Optional[Callable[[], Any]] = None, *,
                 typed: Optional[Iterable[str]] = None, optional_planner: Optional[Callable[[], Any]] = None,
                 progress=None, cancel=None, set_stage: Callable[[str], None] = lambda stage: None):
    """Run the LM stages `options` asks for and return (the resolved request, PlanReport).

    `planner()` returns the LMPlanner (loading it on first use) and raises when there is none;
    `optional_planner()` returns it or None, for the optional metas stage. Nothing loads when no stage runs.
    """
    report = PlanReport()
    typed = set(typed) if typed is not None else set_metas(request)
    sampling = options.sampling()
    cap = {"max_duration": int(options.max_duration)} if options.max_duration else {}
    task = request.task_type
    lm_kwargs = dict(sampling=sampling, progress=progress, cancel=cancel, **cap)

    def run(stage: str, label: str, call: Callable[[Any], Plan], lm: Callable[[], Any]):
        nonlocal request
        set_stage(label)
        t0 = time.perf_counter()
        plan = call(lm())
        report.timings[f"lm_{stage}_s"] = time.perf_counter() - t0
        report.stages.append((stage, plan))
        request = fill_request(request, plan, typed)

    query = options.sample_query.strip()
    if options.sample_mode or query:
        language = request.vocal_language if "vocal_language" in typed else None
        run("sample", "lm: writing a song from the description", lambda lm: lm.create_sample(
            query or "NO USER INPUT", instrumental=wants_instrumental(query),
            language=None if is_automatic("vocal_language", language) else language,
            constrained_decoding=options.constrained_decoding, **lm_kwargs), planner)

    if options.use_format and (request.caption or request.lyrics):
        run("format", "lm: formatting caption and lyrics", lambda lm: lm.format_input(
            request.caption, request.lyrics, **_given_metas(request, typed),
            constrained_decoding=options.constrained_decoding, **lm_kwargs), planner)

    think = dict(use_cot_caption=options.use_cot_caption, use_cot_language=options.use_cot_language,
                 constrained_decoding=options.constrained_decoding)
    if options.thinking and task not in LM_SKIPPED_TASKS:
        run("think", "lm: planning audio codes", lambda lm: lm.think(
            request.caption, request.lyrics, **_given_metas(request, typed), **think,
            generate_codes=task not in LM_METAS_ONLY_TASKS, **lm_kwargs), planner)
    elif (options.fill_missing_metas and task == "text2music" and not report.stages
          and (options.use_cot_caption or options.use_cot_language)
          and any(n not in typed for n in ("bpm", "key_scale", "time_signature", "audio_duration"))):
        lm = optional_planner() if optional_planner is not None else None
        if lm is not None:
            run("metas", "lm: filling missing metadata", lambda lm: lm.think(
                request.caption, request.lyrics, **_given_metas(request, typed), **think,
                generate_codes=False, **lm_kwargs), lambda: lm)

    if options.max_duration and request.audio_duration and request.audio_duration > options.max_duration:
        report.notices.append(f"The planned duration {request.audio_duration:g} s is more than this machine's limit "
                              f"of {options.max_duration:g} s; generating {options.max_duration:g} s instead.")
        request = replace(request, audio_duration=float(options.max_duration))
    return request, report
