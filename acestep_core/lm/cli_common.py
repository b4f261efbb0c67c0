"""Shared pieces of the think / format / sample commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import InputError


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
    if file_value:
        path = Path(file_value)
        if not path.is_file():
            raise InputError(f"{what} file not found: {path}")
        return path.read_text(encoding="utf-8")
    return value or ""


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
