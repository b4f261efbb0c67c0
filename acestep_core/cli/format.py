"""`format`: let the 5 Hz LM rewrite a caption and lyrics and fill the metas."""

from __future__ import annotations

from .lm_commands import add_common, add_song_arguments, check_song_arguments, progress_printer, report_plan, song_metas


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("format", help="rewrite caption / lyrics and fill metas with the 5 Hz LM")
    add_song_arguments(p)
    add_common(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from .lm_args import sampling_from_args

    caption, lyrics = check_song_arguments(args)  # before the LM loads
    if not (caption.strip() or lyrics.strip()):  # REST /format_input's rule: nothing to rewrite
        from ..errors import InputError

        raise InputError("give a caption or lyrics to format (--caption / --lyrics, or --caption-file / "
                         "--lyrics-file); to have the LM write a song from a description, use the sample command")
    from .model_setup import planner_from_args

    planner = planner_from_args(args)
    plan = planner.format_input(
        caption, lyrics,
        **song_metas(args), sampling=sampling_from_args(args), constrained_decoding=args.constrained_decoding,
        max_duration=args.lm_max_duration, progress=progress_printer(not args.json),
    )
    report_plan(plan, args)
    return 0
