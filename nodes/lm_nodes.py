"""LM nodes: thinking (plan + audio codes), format input, simple mode, describe audio."""

from __future__ import annotations

import dataclasses

from ..acestep_core.errors import InputError
from .host import io
from .running import run_engine
from .widgets import (AUTO, CATEGORY, LANGUAGES, MODEL, PLAN, caption_input, lm_sampling, lm_sampling_inputs,
                      bpm_issue, lyrics_input, meta_inputs, meta_issue, opt_bpm, opt_choice, opt_duration,
                      raise_issue)


def plan_outputs() -> list:
    """The plan object plus each of its fields as a plain output, to inspect or rewire."""
    return [
        PLAN.Output("plan", display_name="plan"),
        io.String.Output("caption", display_name="caption"),
        io.String.Output("lyrics", display_name="lyrics"),
        io.Int.Output("duration", display_name="duration", tooltip="Seconds (rounded)."),
        io.Int.Output("bpm", display_name="bpm", tooltip="0 when the LM left it open."),
        io.String.Output("keyscale", display_name="keyscale"),
        io.String.Output("timesignature", display_name="timesignature"),
        io.String.Output("language", display_name="language"),
        io.String.Output("audio_codes", display_name="audio_codes", tooltip="<|audio_code_N|> string."),
        io.String.Output("thinking", display_name="thinking", tooltip="The LM's chain-of-thought text."),
    ]


def plan_node_output(plan) -> io.NodeOutput:
    duration = int(round(plan.duration)) if plan.duration else 0
    values = (plan, plan.caption or "", plan.lyrics or "", duration, int(plan.bpm or 0), plan.keyscale or "",
              str(plan.timesignature or ""), plan.language or "", plan.audio_code_string(), plan.cot_text or "")
    summary = _plan_summary(plan)
    return io.NodeOutput(*values, ui={"text": [summary]})


def _plan_summary(plan) -> str:
    parts = [f"bpm: {plan.bpm or 'auto'}", f"key: {plan.keyscale or 'auto'}",
             f"time: {plan.timesignature or 'auto'}", f"duration: {plan.duration or 'auto'}",
             f"language: {plan.language or 'auto'}", f"codes: {len(plan.audio_codes)}"]
    return " | ".join(parts) + "\n\n" + (plan.caption or "")


def _check_texts(**texts) -> None:
    """The engine's text rule (no NUL / control characters), before the LM is loaded onto the device."""
    from ..acestep_core.values import check_text

    for name, text in texts.items():
        check_text(name, text)


def require_planner(model):
    if getattr(model, "planner", None) is None:
        raise InputError(no_lm_message(getattr(model, "decision", None)))
    return model.planner


def no_lm_message(decision) -> str:
    """Why the model has no LM and what to set on Load ACE-Step, from its load decision."""
    from .model_files import lm_install_hint

    head = "This node needs the 5 Hz LM, but Load ACE-Step loaded none"
    installed = tuple(getattr(decision, "installed_lms", ()) or ())
    if not installed:
        return (f"{head}: no 5 Hz LM is installed. To add one, {lm_install_hint('1.7B')} (the 0.6B LM: "
                f"{lm_install_hint('0.6B')}); then set 'lm' on Load ACE-Step to its size.")
    sizes = ", ".join(installed)
    choice = getattr(decision, "lm_choice", AUTO)
    if choice == "none":
        return f"{head}: its 'lm' is set to none. Set 'lm' to an installed size ({sizes}) or to auto."
    why = getattr(decision, "lm_off_reason", None)
    if choice == AUTO:
        return (f"{head}: 'lm' auto chose no LM on this machine" + (f" ({why})" if why else "")
                + f". Set 'lm' to an installed size explicitly ({sizes}) to use it anyway.")
    return f"{head} (lm {choice}" + (f": {why}" if why else "") + f"). Installed sizes: {sizes}."


def _metas(kwargs) -> dict:
    return dict(bpm=opt_bpm(kwargs["bpm"]), keyscale=opt_choice(kwargs["keyscale"]),
                timesignature=opt_choice(kwargs["timesignature"]), duration=opt_duration(kwargs["duration"]),
                language=opt_choice(kwargs["language"]))


def _keep_given_metas(plan, metas: dict):
    """A meta set on the node is the user's decision; the LM only fills the ones left on auto."""
    names = {"keyscale": "key_scale", "timesignature": "time_signature", "duration": "audio_duration",
             "language": "vocal_language"}
    given = {names.get(k, k): v for k, v in metas.items() if v is not None}
    return dataclasses.replace(plan, **given) if given else plan


class LMThinking(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ACE15S_LMThinking",
            display_name="LM Thinking",
            category=CATEGORY,
            description="The 5 Hz LM plans the song: fills every meta left on auto (and optionally rewrites the "
                        "caption), then writes the audio codes Text2Music follows.",
            inputs=[MODEL.Input("model"), caption_input(), lyrics_input(),
                    *meta_inputs("the LM decides"), *lm_sampling_inputs(),
                    io.Boolean.Input("use_cot_caption", default=True,
                                     tooltip="Let the LM rewrite the caption for the DiT."),
                    io.Boolean.Input("generate_codes", default=True,
                                     tooltip="Write audio codes (off = metas only, faster).")],
            outputs=plan_outputs(),
        )

    @classmethod
    def validate_inputs(cls, bpm):
        return bpm_issue("LM Thinking", bpm) or True

    @classmethod
    def execute(cls, model, caption, lyrics, duration, bpm, keyscale, timesignature, language, lm_temperature,
                lm_cfg_scale, lm_top_k, lm_top_p, lm_negative_prompt, lm_seed, use_cot_caption,
                generate_codes) -> io.NodeOutput:
        kw = dict(locals())
        raise_issue(meta_issue("LM Thinking", duration, bpm))
        planner = require_planner(model)
        sampling = lm_sampling(kw)
        _check_texts(caption=caption, lyrics=lyrics, lm_negative_prompt=lm_negative_prompt)
        plan = model.run_planner(lambda: run_engine(lambda progress, cancel: planner.think(
            caption, lyrics, **_metas(kw), sampling=sampling, use_cot_caption=bool(use_cot_caption),
            use_cot_language=opt_choice(language) is None, generate_codes=bool(generate_codes),
            progress=progress, cancel=cancel)))
        return plan_node_output(plan)


class FormatInput(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ACE15S_FormatInput",
            display_name="Format Input",
            category=CATEGORY,
            description="The LM rewrites a rough caption and lyrics into the form the model was trained on and "
                        "fills the metas left on auto (no audio codes).",
            inputs=[MODEL.Input("model"), caption_input(), lyrics_input(),
                    *meta_inputs("the LM decides"), *lm_sampling_inputs()],
            outputs=plan_outputs(),
        )

    @classmethod
    def validate_inputs(cls, bpm):
        return bpm_issue("Format Input", bpm) or True

    @classmethod
    def execute(cls, model, caption, lyrics, duration, bpm, keyscale, timesignature, language, lm_temperature,
                lm_cfg_scale, lm_top_k, lm_top_p, lm_negative_prompt, lm_seed) -> io.NodeOutput:
        kw = dict(locals())
        raise_issue(meta_issue("Format Input", duration, bpm))
        planner = require_planner(model)
        sampling = lm_sampling(kw)
        _check_texts(caption=caption, lyrics=lyrics, lm_negative_prompt=lm_negative_prompt)
        plan = model.run_planner(lambda: run_engine(lambda progress, cancel: planner.format_input(
            caption, lyrics, **_metas(kw), sampling=sampling, progress=progress, cancel=cancel)))
        return plan_node_output(_keep_given_metas(plan, _metas(kw)))


class SimpleMode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ACE15S_SimpleMode",
            display_name="Simple Mode",
            category=CATEGORY,
            description="Describe a song in one line; the LM writes caption, lyrics and metas.",
            inputs=[MODEL.Input("model"),
                    io.String.Input("description", multiline=True, default="",
                                    tooltip="e.g. 'a cheerful ukulele song about a summer road trip'"),
                    io.Boolean.Input("instrumental", default=False, tooltip="No vocals."),
                    io.Combo.Input("language", options=[AUTO, *LANGUAGES], default=AUTO,
                                   tooltip="Vocal language. auto = the LM decides."),
                    *lm_sampling_inputs()],
            outputs=plan_outputs(),
        )

    @classmethod
    def execute(cls, model, description, instrumental, language, lm_temperature, lm_cfg_scale, lm_top_k,
                lm_top_p, lm_negative_prompt, lm_seed) -> io.NodeOutput:
        kw = dict(locals())
        planner = require_planner(model)
        sampling = lm_sampling(kw)
        _check_texts(description=description, lm_negative_prompt=lm_negative_prompt)
        plan = model.run_planner(lambda: run_engine(lambda progress, cancel: planner.create_sample(
            description, instrumental=bool(instrumental), language=opt_choice(language), sampling=sampling,
            progress=progress, cancel=cancel)))
        return plan_node_output(plan)


class DescribeAudio(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ACE15S_DescribeAudio",
            display_name="Describe Audio",
            category=CATEGORY,
            description="The LM listens to a song through its 5 Hz codes and writes its caption, lyrics and metas. "
                        "The plan keeps the song's codes: into Text2Music it re-renders the song from them.",
            inputs=[MODEL.Input("model"), io.Audio.Input("audio"),
                    *lm_sampling_inputs(temperature=0.3, cfg_scale=1.0)],
            outputs=plan_outputs(),
        )

    @classmethod
    def execute(cls, model, audio, lm_temperature, lm_cfg_scale, lm_top_k, lm_top_p, lm_negative_prompt,
                lm_seed) -> io.NodeOutput:
        from . import audio_wire

        kw = dict(locals())
        planner = require_planner(model)
        clip = audio_wire.from_comfy_audio(audio)
        codes = model.run_pipeline(lambda: run_engine(lambda progress, cancel: model.pipeline.audio_to_codes(
            clip, seed=int(lm_seed), progress=progress, cancel=cancel)))
        sampling = lm_sampling(kw)
        plan = model.run_planner(lambda: run_engine(lambda progress, cancel: planner.understand(
            codes, sampling=sampling, progress=progress, cancel=cancel)))
        return plan_node_output(plan)
