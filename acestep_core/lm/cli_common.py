"""Shared pieces of the think / format / sample commands."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path



def add_common(parser) -> None:
    from .cli_args import add_lm_arguments

    parser.add_argument("--checkpoint-dir", default=None, help="folder holding acestep-5Hz-lm-<size>/")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument("--json", action="store_true", help="print the plan as one JSON object")
    parser.add_argument("--tiny", action="store_true",
                        help="tiny random-weight checkpoints (proves the install; the text and codes are noise)")
    add_lm_arguments(parser)


def add_with_alias(parser, official: str, alias: str, **kwargs) -> None:
    """`official` (the REST field in kebab-case) plus a hidden older spelling that scripts may still use."""
    dest = official.lstrip("-").replace("-", "_")
    parser.add_argument(official, dest=dest, **kwargs)
    parser.add_argument(alias, dest=dest, help=argparse.SUPPRESS, default=argparse.SUPPRESS,
                        **{k: v for k, v in kwargs.items() if k in ("type", "choices")})


def add_song_arguments(parser) -> None:
    """Caption, lyrics and the metas the user may fix (the LM fills the rest), with `generate`'s names."""
    parser.add_argument("--caption", default="")
    parser.add_argument("--caption-file", default=None)
    parser.add_argument("--lyrics", default="")
    parser.add_argument("--lyrics-file", default=None)
    parser.add_argument("--bpm", type=int, default=None)
    add_with_alias(parser, "--key-scale", "--keyscale", default=None, help='e.g. "C major"')
    add_with_alias(parser, "--time-signature", "--timesignature", default=None, help="2, 3, 4 or 6")
    add_with_alias(parser, "--audio-duration", "--duration", type=float, default=None, help="seconds (10-600)")
    add_with_alias(parser, "--vocal-language", "--language", default=None,
                   help="vocal language code (e.g. en, zh); unset = the LM decides")


def song_metas(args) -> dict:
    """The metas of `add_song_arguments` as the planner's keyword arguments."""
    return dict(bpm=args.bpm, keyscale=args.key_scale, timesignature=args.time_signature,
                duration=args.audio_duration, language=args.vocal_language)


def read_text(value, file_value, what: str) -> str:
    from ..values import check_text, read_text_file

    if file_value:
        return read_text_file(file_value, what)
    return check_text(what, value or "")


def check_song_arguments(args) -> tuple[str, str]:
    """Caption, lyrics and metas checked (and the vocabularies normalised on `args`) before the LM loads."""
    from .. import values
    from .cli_args import sampling_from_args
    from .planner import validate_user_fields

    caption = read_text(args.caption, args.caption_file, "caption")
    lyrics = read_text(args.lyrics, args.lyrics_file, "lyrics")
    args.key_scale = values.key_scale(args.key_scale, "--key-scale") or None
    args.time_signature = values.time_signature(args.time_signature, "--time-signature") or None
    args.vocal_language = values.language(args.vocal_language, "--vocal-language") or None
    if args.audio_duration is not None:
        values.finite_number("--audio-duration", args.audio_duration)
    validate_user_fields(args.bpm, args.key_scale, args.time_signature, args.audio_duration, args.vocal_language,
                         args.lm_max_duration)
    sampling_from_args(args).validate()
    check_device(args)
    return caption, lyrics


def check_device(args) -> None:
    from ..pipeline import resolve_device

    resolve_device(getattr(args, "device", "cpu") or "cpu")


def report_plan(plan, args) -> None:
    """Print the plan; after a --tiny run, say loudly that it is noise."""
    print_plan(plan, args.json)
    if getattr(args, "tiny", False):
        from ..cli.model_setup import tiny_notice

        print(tiny_notice(), file=sys.stderr)


def print_plan(plan, as_json: bool) -> None:
    data = {
        "caption": plan.caption, "lyrics": plan.lyrics, "bpm": plan.bpm, "keyscale": plan.keyscale,
        "timesignature": plan.timesignature, "duration": plan.duration, "language": plan.language,
        "audio_codes": [int(c) for c in plan.audio_codes], "cot_text": plan.cot_text, "lm_seed": plan.lm_seed,
    }
    if as_json:
        print(json.dumps(data, ensure_ascii=False))
        return
    for key in ("caption", "bpm", "keyscale", "timesignature", "duration", "language", "lm_seed"):
        print(f"{key}: {data[key]}")
    print(f"audio codes: {len(data['audio_codes'])}")
    if plan.lyrics:
        print("lyrics:\n" + plan.lyrics)


def progress_printer(enabled: bool):
    """LM token progress on stderr (a bar on a terminal, one line per phase otherwise)."""
    if not enabled:
        return None
    from ..cli.progress import StageProgress

    return StageProgress("LM", "tokens")
