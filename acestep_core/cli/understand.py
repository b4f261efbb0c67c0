"""`understand`: describe a song with the 5 Hz LM — caption, lyrics and metas from its audio codes."""

from __future__ import annotations

import sys

from ..errors import InputError
from .lm_commands import add_common, check_device, progress_printer, report_plan


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("understand", help="describe a song (caption, lyrics, metas) with the 5 Hz LM")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--src-audio", default=None, help="the song; encoded with the VAE and the DiT's tokenizer")
    src.add_argument("--audio-codes", default=None, help="its 5 Hz codes instead: <|audio_code_N|> string or comma ints")
    g = p.add_argument_group("models for --src-audio")
    g.add_argument("--dit", default=None, help="DiT folder or ComfyUI file (its audio tokenizer is used)")
    g.add_argument("--vae", default=None)
    g.add_argument("--text-encoder", default=None)
    g.add_argument("--text-tokenizer", default=None)
    g.add_argument("--offload", default="auto", choices=["auto", "on", "off"])
    g.add_argument("--seed", type=int, default=0, help="seed of the VAE posterior sample")
    add_common(p)
    # The reference describes audio at temperature 0.3 without CFG.
    p.set_defaults(func=run, lm_temperature=0.3, lm_cfg_scale=1.0)


def _codes_from_audio(args):
    """(codes, the engine that made them; its LM describes them)."""
    from .model_setup import engine_from_args, plan_from_args

    from ..sources import source_waveform

    if args.checkpoint_dir is None and not (args.tiny or args.dit):
        raise InputError("--src-audio needs the DiT and VAE: pass --checkpoint-dir (or --dit/--vae/--text-encoder, "
                         "or --tiny), or give --audio-codes instead")
    wave = source_waveform(args.src_audio, "--src-audio")  # a bad file is refused before any model loads
    engine = engine_from_args(args, plan=plan_from_args(args, want_lm=True), need_lm=True)
    from .progress import StageProgress

    codes = engine.pipeline.audio_to_codes(wave, seed=args.seed, progress=StageProgress("VAE encode", "tiles"))
    print(f"{len(codes)} audio codes from {args.src_audio}", file=sys.stderr)
    return codes, engine


def run(args) -> int:
    from ..codes import codes_from_any
    from .lm_args import sampling_from_args
    from .model_setup import planner_from_args

    sampling = sampling_from_args(args)
    sampling.validate()
    check_device(args)
    if args.audio_codes is not None:
        codes = codes_from_any(args.audio_codes)
        if not codes:
            raise InputError("--audio-codes holds no codes: give <|audio_code_N|> tokens or comma-separated integers")
    else:
        codes, engine = _codes_from_audio(args)
    planner = engine.planner() if args.audio_codes is None else planner_from_args(args)
    plan = planner.understand(codes, sampling=sampling, constrained_decoding=args.constrained_decoding,
                              max_duration=args.lm_max_duration, progress=progress_printer(not args.json))
    report_plan(plan, args)
    return 0
