"""The 5 Hz LM's flags (from the schema), shared by `think`, `format`, `sample`, `understand` and `generate`."""

from __future__ import annotations

import argparse

from ..lm.sampling import LMSampling


LM_FIELDS = ("lm_temperature", "lm_cfg_scale", "lm_top_k", "lm_top_p", "lm_repetition_penalty",
             "lm_negative_prompt", "lm_seed", "use_cot_caption", "use_cot_language", "constrained_decoding")


def add_lm_arguments(parser: argparse.ArgumentParser):
    """The LM's files, then its settings from the request schema; returns the argument group."""
    from .schema_args import add_fields

    g = parser.add_argument_group("5 Hz LM")
    g.add_argument("--lm-model", default=None,
                   help="0.6B | 1.7B | 4B (under --checkpoint-dir), an LM folder, or a ComfyUI qwen_*_ace15.safetensors")
    g.add_argument("--lm-tokenizer", default=None,
                   help="tokenizer folder for LM files that carry none (official LM folder or Qwen tokenizer files)")
    add_fields(g, LM_FIELDS)
    g.add_argument("--lm-max-duration", type=int, default=600, help="duration cap of the constrained decoder (s)")
    return g


def sampling_from_args(args) -> LMSampling:
    from .schema_args import values_of
    from ..planning import PlanOptions

    return PlanOptions.from_values(values_of(args, "plan"), "cli").sampling()


def think_kwargs_from_args(args) -> dict:
    """Keyword arguments of `LMPlanner.think` other than caption / lyrics / metas."""
    return dict(
        sampling=sampling_from_args(args), use_cot_caption=args.use_cot_caption,
        use_cot_language=args.use_cot_language, constrained_decoding=args.constrained_decoding,
        max_duration=args.lm_max_duration,
    )
