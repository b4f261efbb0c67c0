"""`format`: let the 5 Hz LM rewrite a caption and lyrics and fill the metas."""

from __future__ import annotations

from ..lm.cli_common import add_common, add_song_arguments, report_plan, progress_printer, read_text, song_metas


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("format", help="rewrite caption / lyrics and fill metas with the 5 Hz LM")
    add_song_arguments(p)
    add_common(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..lm.cli_args import load_planner_from_args, sampling_from_args

    planner = load_planner_from_args(args)
    plan = planner.format_input(
        read_text(args.caption, args.caption_file, "caption"), read_text(args.lyrics, args.lyrics_file, "lyrics"),
        **song_metas(args), sampling=sampling_from_args(args), constrained_decoding=args.constrained_decoding,
        max_duration=args.lm_max_duration, progress=progress_printer(not args.json),
    )
    report_plan(plan, args)
    return 0
