"""Shared pieces of the think / format / sample commands."""

from __future__ import annotations

import json
import sys



def add_common(parser) -> None:
    from .lm_args import add_lm_arguments

    parser.add_argument("--checkpoint-dir", default=None, help="folder holding acestep-5Hz-lm-<size>/")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument("--json", action="store_true", help="print the plan as one JSON object")
    parser.add_argument("--tiny", action="store_true",
                        help="tiny random-weight checkpoints (proves the install; the text and codes are noise)")
    add_lm_arguments(parser)


def add_song_arguments(parser) -> None:
    """Caption, lyrics and the metas the user may fix (the LM fills the rest): `generate`'s flags from the
    schema, every meta unset by default; the LM's own spellings (--keyscale, ...) still work, hidden."""
    from .schema_args import add_fields

    metas = ("bpm", "key_scale", "time_signature", "audio_duration", "vocal_language")
    add_fields(parser, ("caption",))
    parser.add_argument("--caption-file", default=None)
    add_fields(parser, ("lyrics",))
    parser.add_argument("--lyrics-file", default=None)
    add_fields(parser, metas, defaults={name: None for name in metas},
               legacy={"key_scale": "--keyscale", "time_signature": "--timesignature",
                       "audio_duration": "--duration", "vocal_language": "--language"})


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
    from .lm_args import sampling_from_args
    from ..lm.planner import validate_user_fields

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
        from .model_setup import tiny_notice

        print(tiny_notice(), file=sys.stderr)


def print_plan(plan, as_json: bool) -> None:
    from ..plan import LEGACY_NAMES

    data = plan.to_dict()
    data["audio_codes"] = [int(c) for c in plan.audio_codes]
    # Scripts written against the LM's spellings (keyscale, duration, ...) keep reading them.
    data.update({old: data[new] for old, new in LEGACY_NAMES.items()})
    if as_json:
        print(json.dumps(data, ensure_ascii=False))
        return
    for key in ("caption", "bpm", "key_scale", "time_signature", "audio_duration", "vocal_language", "lm_seed"):
        print(f"{key}: {data[key]}")
    print(f"audio codes: {len(data['audio_codes'])}")
    if plan.lyrics:
        print("lyrics:\n" + plan.lyrics)


def progress_printer(enabled: bool):
    """LM token progress on stderr (a bar on a terminal, one line per phase otherwise)."""
    if not enabled:
        return None
    from .progress import StageProgress

    return StageProgress("LM", "tokens")
