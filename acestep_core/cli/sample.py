"""`sample`: simple mode, a description → caption, lyrics and metas."""

from __future__ import annotations

from .lm_commands import add_common, check_device, progress_printer, report_plan
from .schema_args import add_fields


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("sample", help="simple mode: write caption, lyrics and metas from a description")
    p.add_argument("query", nargs="?", default="", help="description of the song")
    p.add_argument("--instrumental", action="store_true")
    add_fields(p, ("vocal_language",), defaults={"vocal_language": None}, legacy={"vocal_language": "--language"})
    add_common(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from .lm_args import sampling_from_args

    from .. import values

    # Checked before the LM loads.
    query = values.check_text("query", args.query)
    language = values.language(args.vocal_language, "--vocal-language") or None
    sampling = sampling_from_args(args)
    sampling.validate()
    check_device(args)
    from .model_setup import planner_from_args

    planner = planner_from_args(args)
    plan = planner.create_sample(
        query, instrumental=args.instrumental, language=language, sampling=sampling,
        constrained_decoding=args.constrained_decoding, max_duration=args.lm_max_duration,
        progress=progress_printer(not args.json),
    )
    report_plan(plan, args)
    return 0
