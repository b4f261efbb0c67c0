"""`think`: run the 5 Hz LM planner (chain of thought + audio codes) and print the plan."""

from __future__ import annotations

from .lm_commands import add_common, add_song_arguments, check_song_arguments, progress_printer, report_plan, song_metas


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("think", help="plan a song with the 5 Hz LM (metas, caption, audio codes)")
    add_song_arguments(p)
    p.add_argument("--no-codes", action="store_true", help="stop after the chain of thought")
    add_common(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from .lm_args import think_kwargs_from_args

    caption, lyrics = check_song_arguments(args)  # before the LM loads
    from .model_setup import planner_from_args

    planner = planner_from_args(args)
    plan = planner.think(
        caption, lyrics,
        **song_metas(args), generate_codes=not args.no_codes, progress=progress_printer(not args.json),
        **think_kwargs_from_args(args),
    )
    report_plan(plan, args)
    return 0
