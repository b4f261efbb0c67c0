"""The LM flags, with the official names, shared by `think`, `format`, `sample` and `generate --thinking`."""

from __future__ import annotations

import argparse

from .sampling import LMSampling


def _bool(text: str) -> bool:
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_lm_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("5 Hz LM")
    g.add_argument("--lm-model", default=None,
                   help="0.6B | 1.7B | 4B (under --checkpoint-dir), an LM folder, or a ComfyUI qwen_*_ace15.safetensors")
    g.add_argument("--lm-tokenizer", default=None,
                   help="tokenizer folder for LM files that carry none (official LM folder or Qwen tokenizer files)")
    g.add_argument("--lm-temperature", type=float, default=0.85, help="0 = greedy")
    g.add_argument("--lm-cfg-scale", type=float, default=2.0, help="1 = no CFG")
    g.add_argument("--lm-top-k", type=int, default=0, help="0 = off")
    g.add_argument("--lm-top-p", type=float, default=0.9, help="1 = off")
    g.add_argument("--lm-repetition-penalty", type=float, default=1.0)
    g.add_argument("--lm-negative-prompt", default="NO USER INPUT")
    g.add_argument("--lm-seed", type=int, default=-1, help="-1 = random (the seed used is reported)")
    g.add_argument("--use-cot-caption", type=_bool, default=True, metavar="BOOL")
    g.add_argument("--use-cot-language", type=_bool, default=True, metavar="BOOL")
    g.add_argument("--constrained-decoding", type=_bool, default=True, metavar="BOOL")
    g.add_argument("--lm-max-duration", type=int, default=600, help="duration cap of the constrained decoder (s)")


def sampling_from_args(args) -> LMSampling:
    return LMSampling(
        temperature=args.lm_temperature, cfg_scale=args.lm_cfg_scale, top_k=args.lm_top_k, top_p=args.lm_top_p,
        repetition_penalty=args.lm_repetition_penalty, negative_prompt=args.lm_negative_prompt, seed=args.lm_seed,
    )


def think_kwargs_from_args(args) -> dict:
    """Keyword arguments of `LMPlanner.think` other than caption / lyrics / metas."""
    return dict(
        sampling=sampling_from_args(args), use_cot_caption=args.use_cot_caption,
        use_cot_language=args.use_cot_language, constrained_decoding=args.constrained_decoding,
        max_duration=args.lm_max_duration,
    )


def load_planner_from_args(args):
    from .planner import LMPlanner, find_lm

    tiny = getattr(args, "tiny", False)
    if tiny and not args.lm_model:
        import sys

        from ..cli.model_setup import tiny_checkpoints, tiny_notice

        print(tiny_notice(), file=sys.stderr)
        args.lm_model = str(tiny_checkpoints()["lm"])
    path = find_lm(getattr(args, "checkpoint_dir", None), args.lm_model)
    # --tiny stays in float32 whatever the CPU, so the install check behaves the same everywhere.
    dtype = "float32" if tiny else getattr(args, "dtype", "auto") or "auto"
    return LMPlanner.from_pretrained(path, tokenizer_path=args.lm_tokenizer,
                                     device=getattr(args, "device", "cpu") or "cpu", dtype=dtype)
