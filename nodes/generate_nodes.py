"""Generation nodes: Text2Music, Continue, Repaint, Cover -> AUDIO (+ LATENT)."""

from __future__ import annotations

import logging

from ..acestep_core.errors import InputError
from . import audio_wire, host
from .host import io
from .running import run_engine
from .widgets import (CATEGORY, MAX_BATCH, MAX_DURATION, MODEL, PLAN, adg_input, bpm_issue, caption_input, dit_inputs,
                      lyrics_input, meta_inputs, meta_issue, opt_bpm, opt_choice, opt_duration, raise_issue,
                      schema_range, window_range_issue)

REPAINT_MIN_SECONDS = 0.5
# The engine's rule for an unset duration (tasks.DEFAULT_DURATION; a plan fills it by planning.fill_request).
TEXT2MUSIC_AUTO_DURATION = ("a connected plan's duration, which the LM planned; with no plan (or a plan that "
                            "left it open) 120 s, the official default")
log = logging.getLogger(__name__)


def _request(**fields):
    from ..acestep_core import GenerationRequest

    return GenerationRequest(**fields)


def _dit_fields(seed, steps, shift, guidance, adg=False) -> dict:
    return dict(seed=int(seed), inference_steps=int(steps), shift=float(shift), guidance_scale=float(guidance),
                use_adg=bool(adg))


def _generate(model, request):
    """Run `request`; returns (result, notices): what the run changed of the request or the user should
    know (batch or duration held to the memory decision, steps the model did not use or needs more of)."""
    from ..acestep_core.schedules import few_steps_note

    request.adapters = list(getattr(model, "adapters", ()))  # from ACE-Step LoRA nodes upstream
    # The engine's checks (values, decoded sources, the window against the source) run before the
    # models are moved onto the device.
    request.validate()
    request = request.check_sources()
    notices = []
    engine = getattr(model, "engine", None)
    if engine is not None:  # the Load node's memory decision holds duration and batch, as for the CLI and REST
        request, notices = engine.clamp(request)
        notices = list(notices)
    if not model.pipeline.is_turbo:
        # The steps widget starts at turbo's 8 (turbo ignores it), which leaves a base / SFT model noisy.
        notices += [n for n in (few_steps_note(request.inference_steps),) if n]
    result = model.run_pipeline(lambda: run_engine(
        # The encode of a source or timbre reference fills the bar first, then the steps refill it.
        lambda progress, cancel: model.pipeline.generate(request, progress=progress, cancel=cancel,
                                                         encode_progress=progress)))
    notices += list(getattr(result, "notices", ()))
    for notice in notices:
        log.warning("ACE-Step: %s", notice)
    return result, notices


def _song_info(model, result, plan=None) -> dict:
    """What the save node writes into the file's tags (travels as an extra key of AUDIO)."""
    params = dict(getattr(result, "params", {}) or {})
    info = {"params": params, "seeds": list(getattr(result, "seeds", []) or []),
            "model": model.decision.to_dict()}
    if plan is not None:
        info["plan"] = plan.to_dict()
    return info


def _audio_out(model, result, plan=None) -> dict:
    audio = audio_wire.to_comfy_audio(result.audio, result.sample_rate)
    audio["acestep"] = _song_info(model, result, plan)
    return audio


def run_report(result, notices) -> str:
    """What the node shows: the songs made, then each notice."""
    seeds = list(getattr(result, "seeds", []) or [])
    seconds = result.audio.shape[-1] / result.sample_rate
    head = (f"{len(seeds) or 1} song{'s' if len(seeds) > 1 else ''} of {seconds:.2f} s"
            + (f", seed {', '.join(str(x) for x in seeds)}" if seeds else ""))
    return "\n".join([head, *(f"- {n}" for n in notices)])


def node_output(cls, result, notices, *values) -> io.NodeOutput:
    """The node's values, with the run report shown on the node (ComfyUI's progress text under it)
    and returned as the node's UI text (history, API clients)."""
    report = run_report(result, notices)
    host.show_text(getattr(getattr(cls, "hidden", None), "unique_id", None), report)
    return io.NodeOutput(*values, ui={"text": [report]})


def generate_audio(cls, model, request) -> io.NodeOutput:
    """Run an audio-in, audio-out request: the node's single AUDIO output."""
    result, notices = _generate(model, request)
    return node_output(cls, result, notices, _audio_out(model, result))


class Text2Music(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ACE15S_Text2Music",
            display_name="Text2Music",
            category=CATEGORY,
            description="Generates songs from a caption and lyrics, or from an LM plan: the plan's caption, lyrics "
                        "and audio codes are used, and its metas fill those left on auto here.",
            inputs=[MODEL.Input("model"), caption_input(), lyrics_input(),
                    *meta_inputs("model default", duration_tip=TEXT2MUSIC_AUTO_DURATION),
                    *dit_inputs(),
                    io.Int.Input("batch_size", default=1, min=1, max=MAX_BATCH, tooltip="Songs per run."),
                    PLAN.Input("plan", optional=True,
                               tooltip="From LM Thinking / Format Input / Simple Mode: its caption, lyrics and codes "
                                       "are used; its metas fill the ones left on auto."),
                    adg_input()],
            outputs=[io.Audio.Output("audio", display_name="audio"),
                     io.Latent.Output("latent", display_name="latent",
                                      tooltip="ACE-Step 1.5 latent [B, 64, T] (works with VAEDecodeAudio).")],
            hidden=[io.Hidden.unique_id],
            not_idempotent=True,
        )

    @classmethod
    def validate_inputs(cls, bpm):
        return bpm_issue("Text2Music", bpm) or True

    @classmethod
    def execute(cls, model, caption, lyrics, duration, bpm, keyscale, timesignature, language, seed, steps, shift,
                guidance, batch_size, plan=None, adg=False) -> io.NodeOutput:
        raise_issue(meta_issue("Text2Music", duration, bpm))
        fields = dict(caption=caption, lyrics=lyrics, bpm=opt_bpm(bpm), key_scale=opt_choice(keyscale) or "",
                      time_signature=opt_choice(timesignature) or "",
                      vocal_language=opt_choice(language) or "unknown", audio_duration=opt_duration(duration),
                      task_type="text2music", batch_size=int(batch_size),
                      **_dit_fields(seed, steps, shift, guidance, adg))
        request = _request(**fields)
        if plan is not None:
            from ..acestep_core.planning import fill_request

            request = fill_request(request, plan)  # the engine's one rule, as for the CLI and REST
        result, notices = _generate(model, request)
        return node_output(cls, result, notices, _audio_out(model, result, plan),
                           audio_wire.to_comfy_latent(result.latents))


def _source(audio, what="audio"):
    clip = audio_wire.from_comfy_audio(audio, what)
    return clip, clip.shape[-1] / audio_wire.ENGINE_SAMPLE_RATE


class Continue(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ACE15S_Continue",
            display_name="Continue",
            category=CATEGORY,
            description="Extends a song: regenerates the last 'overlap' seconds and adds 'seconds' of new music.",
            inputs=[MODEL.Input("model"), io.Audio.Input("audio"),
                    io.Float.Input("seconds", default=30.0, **schema_range("continuation_seconds", min=1.0), step=1.0,
                                   tooltip="Seconds of new music to add."),
                    caption_input(), lyrics_input(), *dit_inputs(),
                    io.Float.Input("overlap", default=1.0, min=0.0, max=30.0, step=0.1,
                                   tooltip="Seconds at the end of the source regenerated for a smooth join."),
                    adg_input()],
            outputs=[io.Audio.Output("audio", display_name="audio")],
            hidden=[io.Hidden.unique_id],
            not_idempotent=True,
        )

    @classmethod
    def execute(cls, model, audio, seconds, caption, lyrics, seed, steps, shift, guidance, overlap,
                adg=False) -> io.NodeOutput:
        clip, src_seconds = _source(audio)
        if seconds <= 0:
            raise InputError("seconds to add must be > 0")
        if float(overlap) >= src_seconds:
            # A window from the very start is the engine's "unset" (= from the end): refuse, don't ignore it.
            raise InputError(f"Continue: overlap ({float(overlap):g}s) must be shorter than the source audio "
                             f"({src_seconds:.2f}s); to regenerate all of it use Repaint or Cover")
        # The engine's continuation: regenerate from `overlap` before the end, add `seconds` after it.
        request = _request(caption=caption, lyrics=lyrics, task_type="continuation", src_audio=clip,
                           repainting_start=max(0.0, src_seconds - float(overlap)),
                           continuation_seconds=float(seconds), **_dit_fields(seed, steps, shift, guidance, adg))
        return generate_audio(cls, model, request)


class Repaint(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ACE15S_Repaint",
            display_name="Repaint",
            category=CATEGORY,
            description="Regenerates the part of a song between start and end; the rest is kept.",
            inputs=[MODEL.Input("model"), io.Audio.Input("audio"),
                    io.Float.Input("start", default=0.0, min=0.0, max=MAX_DURATION, step=0.1, tooltip="Window start (s)."),
                    io.Float.Input("end", default=10.0, min=0.0, max=MAX_DURATION, step=0.1, tooltip="Window end (s)."),
                    caption_input(), lyrics_input(), *dit_inputs(),
                    io.Float.Input("strength", default=0.5, **schema_range("repaint_strength"), step=0.05,
                                   tooltip="Balanced repaint strength: higher = freer inside, softer seams."),
                    adg_input()],
            outputs=[io.Audio.Output("audio", display_name="audio")],
            hidden=[io.Hidden.unique_id],
            not_idempotent=True,
        )

    @classmethod
    def execute(cls, model, audio, start, end, caption, lyrics, seed, steps, shift, guidance,
                strength, adg=False) -> io.NodeOutput:
        # Checked here, not in validate_inputs: ComfyUI would file a message about one of start / end
        # under both and stop range-checking them (widgets.py).
        raise_issue(_window_issue(start, end))
        clip, src_seconds = _source(audio)
        if start >= src_seconds:
            raise InputError(f"Repaint start {start:.2f}s is past the end of the audio ({src_seconds:.2f}s); "
                             "use Continue to add music after the end")
        request = _request(caption=caption, lyrics=lyrics, task_type="repaint", src_audio=clip,
                           repainting_start=float(start), repainting_end=min(float(end), src_seconds),
                           repaint_mode="balanced", repaint_strength=float(strength),
                           **_dit_fields(seed, steps, shift, guidance, adg))
        return generate_audio(cls, model, request)


def _window_issue(start, end):
    issue = window_range_issue("Repaint", start, end)
    if issue or start is None or end is None:
        return issue
    if float(end) - float(start) < REPAINT_MIN_SECONDS:
        return f"Repaint: end ({end:g}s) must be at least {REPAINT_MIN_SECONDS}s after start ({start:g}s)"
    return None


class Cover(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ACE15S_Cover",
            display_name="Cover",
            category=CATEGORY,
            description="Re-performs a song in a new style: keeps its structure and melody (through the 5 Hz "
                        "codes of the source) and follows the caption; an optional reference sets the timbre.",
            inputs=[MODEL.Input("model"), io.Audio.Input("audio"),
                    io.Float.Input("strength", default=1.0, **schema_range("audio_cover_strength"), step=0.05,
                                   tooltip="Share of the steps that follow the source (audio_cover_strength)."),
                    caption_input(), lyrics_input(), *dit_inputs(),
                    io.Audio.Input("reference", optional=True, tooltip="Reference audio for the timbre."),
                    io.Float.Input("noise_strength", default=0.0, **schema_range("cover_noise_strength"), step=0.05,
                                   optional=True,
                                   tooltip="How close to the source to start (cover_noise_strength): 0 = from "
                                           "pure noise, higher = start from the source re-noised, fewer steps."),
                    adg_input()],
            outputs=[io.Audio.Output("audio", display_name="audio")],
            hidden=[io.Hidden.unique_id],
            not_idempotent=True,
        )

    @classmethod
    def execute(cls, model, audio, strength, caption, lyrics, seed, steps, shift, guidance,
                reference=None, noise_strength=0.0, adg=False) -> io.NodeOutput:
        clip, _ = _source(audio)
        ref = _source(reference, "reference")[0] if reference is not None else None
        request = _request(caption=caption, lyrics=lyrics, task_type="cover", src_audio=clip, reference_audio=ref,
                           audio_cover_strength=float(strength), cover_noise_strength=float(noise_strength or 0.0),
                           **_dit_fields(seed, steps, shift, guidance, adg))
        return generate_audio(cls, model, request)
