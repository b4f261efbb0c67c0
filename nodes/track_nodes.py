"""Track nodes of the base model: Extract Track, Add Track (lego), Complete Track -> AUDIO."""

from __future__ import annotations

from ..acestep_core.errors import InputError
from ..acestep_core.prompts import TRACK_NAMES
from .generate_nodes import _dit_fields, _request, _source, generate_audio
from .host import io
from .widgets import (CATEGORY, MAX_DURATION, MODEL, adg_input, caption_input, dit_inputs, lyrics_input, raise_issue,
                      window_range_issue)

BASE_STEPS = 32  # the base model's usual step count (turbo's 8 is too few for it)
BASE_NOTE = " Needs the base model (acestep_v1.5_base.safetensors); turbo and SFT were not trained for it."


def _track_input(default: str):
    return io.Combo.Input("track", options=list(TRACK_NAMES), default=default, tooltip="The track (stem).")


def _parse_tracks(text: str) -> list[str]:
    from ..acestep_core.request import parse_tracks

    return parse_tracks(str(text), "Complete Track: tracks")


class ExtractTrack(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ACE15S_ExtractTrack",
            display_name="Extract Track",
            category=CATEGORY,
            description="Separates one track (vocals, drums, bass, ...) out of a song; same length as the song."
                        + BASE_NOTE,
            inputs=[MODEL.Input("model"), io.Audio.Input("audio"), _track_input("vocals"),
                    caption_input(), lyrics_input(), *dit_inputs(BASE_STEPS), adg_input()],
            outputs=[io.Audio.Output("audio", display_name="audio")],
            hidden=[io.Hidden.unique_id],
            not_idempotent=True,
        )

    @classmethod
    def execute(cls, model, audio, track, caption, lyrics, seed, steps, shift, guidance, adg=False) -> io.NodeOutput:
        clip, _ = _source(audio)
        request = _request(caption=caption, lyrics=lyrics, task_type="extract", track_name=str(track), src_audio=clip,
                           **_dit_fields(seed, steps, shift, guidance, adg))
        return generate_audio(cls, model, request)


class AddTrack(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ACE15S_AddTrack",
            display_name="Add Track",
            category=CATEGORY,
            description="Generates one new track that fits the song (lego) and returns the mix, inside "
                        "start..end (end 0 = to the end); outside the window the song is kept." + BASE_NOTE,
            inputs=[MODEL.Input("model"), io.Audio.Input("audio"), _track_input("drums"),
                    io.Float.Input("start", default=0.0, min=0.0, max=MAX_DURATION, step=0.1, tooltip="Window start (s)."),
                    io.Float.Input("end", default=0.0, min=0.0, max=MAX_DURATION, step=0.1,
                                   tooltip="Window end (s); 0 = the end of the song."),
                    caption_input(), lyrics_input(), *dit_inputs(BASE_STEPS), adg_input()],
            outputs=[io.Audio.Output("audio", display_name="audio")],
            hidden=[io.Hidden.unique_id],
            not_idempotent=True,
        )

    @classmethod
    def execute(cls, model, audio, track, start, end, caption, lyrics, seed, steps, shift,
                guidance, adg=False) -> io.NodeOutput:
        # Checked here, not in validate_inputs (see Repaint).
        raise_issue(_window_issue(start, end))
        clip, src_seconds = _source(audio)
        if float(start) >= src_seconds:
            raise InputError(f"Add Track: start {start:.2f}s is past the end of the song ({src_seconds:.2f}s)")
        request = _request(caption=caption, lyrics=lyrics, task_type="lego", track_name=str(track), src_audio=clip,
                           repainting_start=float(start),
                           repainting_end=min(float(end), src_seconds) if float(end) > 0 else None,
                           **_dit_fields(seed, steps, shift, guidance, adg))
        return generate_audio(cls, model, request)


def _window_issue(start, end):
    """Add Track's window: the ranges (for linked values) and end after start."""
    issue = window_range_issue("Add Track", start, end)
    if issue or start is None or end is None:
        return issue
    if float(end) > 0 and float(end) <= float(start):
        return f"Add Track: end ({end:g}s) must be after start ({start:g}s), or 0 for the end of the song"
    return None


class CompleteTrack(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ACE15S_CompleteTrack",
            display_name="Complete Track",
            category=CATEGORY,
            description="Completes a partial arrangement (e.g. a vocal or a guitar take) with the tracks named."
                        + BASE_NOTE,
            inputs=[MODEL.Input("model"), io.Audio.Input("audio"),
                    io.String.Input("tracks", default="drums, bass",
                                    tooltip="Comma list of tracks to add: " + ", ".join(TRACK_NAMES)
                                            + ". Empty = let the model choose."),
                    caption_input(), lyrics_input(), *dit_inputs(BASE_STEPS), adg_input()],
            outputs=[io.Audio.Output("audio", display_name="audio")],
            hidden=[io.Hidden.unique_id],
            not_idempotent=True,
        )

    @classmethod
    def validate_inputs(cls, tracks):
        if tracks is None:  # from a link: checked when it runs
            return True
        try:
            _parse_tracks(tracks)
        except InputError as exc:
            return str(exc)
        return True

    @classmethod
    def execute(cls, model, audio, tracks, caption, lyrics, seed, steps, shift, guidance, adg=False) -> io.NodeOutput:
        clip, _ = _source(audio)
        request = _request(caption=caption, lyrics=lyrics, task_type="complete", track_classes=_parse_tracks(tracks),
                           src_audio=clip, **_dit_fields(seed, steps, shift, guidance, adg))
        return generate_audio(cls, model, request)
