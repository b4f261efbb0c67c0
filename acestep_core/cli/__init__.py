"""`python -m acestep_core <command>`: one module per command, each with `add_parser(subparsers)`.

A command module registers its own flags and sets `func` on its parser; `main` dispatches and turns
engine errors into a one-line message instead of a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

from ..errors import ACEStepError

# Order is the order `--help` lists them.
COMMAND_MODULES = [
    "generate",
    "think",
    "format",
    "sample",
    "understand",
    "doctor",
    "serve",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m acestep_core",
        description="ACE-Step 1.5 music generation engine.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module_name = f"{__name__}.{name}"
        if importlib.util.find_spec(module_name) is None:
            continue
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ACEStepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
