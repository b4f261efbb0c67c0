"""Shared pieces of the think / format / sample commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path



def add_common(parser) -> None:
    from .cli_args import add_lm_arguments

    parser.add_argument("--checkpoint-dir", default=None, help="folder holding acestep-5Hz-lm-<size>/")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument("--json", action="store_true", help="print the plan as one JSON object")
    add_lm_arguments(parser)


def add_song_arguments(parser) -> None:
    """Caption, lyrics and the metas the user may fix (the LM fills the rest)."""
    parser.add_argument("--caption", default="")
    parser.add_argument("--caption-file", default=None)
    parser.add_argument("--lyrics", default="")
    parser.add_argument("--lyrics-file", default=None)
    parser.add_argument("--bpm", type=int, default=None)
    parser.add_argument("--keyscale", default=None)
    parser.add_argument("--timesignature", default=None)
    parser.add_argument("--duration", type=float, default=None)
    parser.add_argument("--language", default=None)


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
    args.keyscale = values.key_scale(args.keyscale, "--keyscale") or None
    args.timesignature = values.time_signature(args.timesignature, "--timesignature") or None
    args.language = values.language(args.language, "--language") or None
    if args.duration is not None:
        values.finite_number("--duration", args.duration)
    validate_user_fields(args.bpm, args.keyscale, args.timesignature, args.duration, args.language,
                         args.lm_max_duration)
    sampling_from_args(args).validate()
    check_device(args)
    return caption, lyrics


def check_device(args) -> None:
    from ..pipeline import resolve_device

    resolve_device(getattr(args, "device", "cpu") or "cpu")


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
    if not enabled:
        return None

    def report(done: int, total: int) -> None:
        if done == total or done % 50 == 0:
            print(f"\rLM {done}/{total} tokens", end="" if done < total else "\n", file=sys.stderr, flush=True)

    return report
