"""Which checkpoints and settings a CLI run uses: the flags as `loading.ModelPaths` / `LoadChoices`.

The decision itself lives in acestep_core/loading.py (`decide_load`), shared with `serve` and the
ComfyUI Load node; this module only reads the flags and prints what was decided.
"""

from __future__ import annotations

import sys

from ..loading import (  # noqa: F401  (re-exported: these lived here before loading.py)
    DIT_PREFERENCE,
    GET_WEIGHTS_HELP,
    LoadChoices,
    ModelPaths,
    check_lm,
    default_dit,
    load_engine,
    plan_load,
    tiny_checkpoints,
    tiny_notice,
)
from ..prompts import TRACK_TASKS


def paths_from_args(args) -> ModelPaths:
    """--checkpoint-dir, --dit, --vae, --text-encoder, --text-tokenizer, --lm-model, --lm-tokenizer, --tiny."""
    dit = getattr(args, "dit", None)
    tiny = bool(getattr(args, "tiny", False))
    if tiny and not dit and getattr(args, "task_type", None) in TRACK_TASKS:
        dit = str(tiny_checkpoints()["dit_base"])  # the track tasks need a base model; an explicit --dit wins
    return ModelPaths(checkpoint_dir=getattr(args, "checkpoint_dir", None), dit=dit, vae=getattr(args, "vae", None),
                      text_encoder=getattr(args, "text_encoder", None),
                      text_tokenizer=getattr(args, "text_tokenizer", None),
                      lm_tokenizer=getattr(args, "lm_tokenizer", None), tiny=tiny)


def choices_from_args(args, want_lm: bool = False) -> LoadChoices:
    """--device, --dtype, --offload and --lm-model; `want_lm`: this run uses the LM (--thinking)."""
    return LoadChoices(device=getattr(args, "device", None) or "auto", dtype=getattr(args, "dtype", None) or "auto",
                       offload=getattr(args, "offload", None) or "auto",
                       lm=getattr(args, "lm_model", None) or "auto", want_lm=want_lm)


def plan_from_args(args, want_lm: bool = False):
    """The load plan (paths, decision, LM) for these flags, with its notes printed on stderr."""
    choices = choices_from_args(args, want_lm)
    plan = plan_load(paths_from_args(args), choices)
    if want_lm:
        check_lm(plan, choices)  # a missing LM is the only message, before anything loads
    print(f"memory: {plan.decision.summary()}", file=sys.stderr)
    if plan.paths.tiny:
        print(tiny_notice(), file=sys.stderr)
    return plan


def engine_from_args(args, plan=None, need_lm: bool = False):
    """The loaded engine for these flags (`plan`: the one `plan_from_args` already made)."""
    return load_engine(paths_from_args(args), choices_from_args(args, need_lm), plan=plan, need_lm=need_lm)


def pipeline_kwargs(args) -> tuple[dict, list[str]]:
    """`ACEStepPipeline.from_pretrained` keyword arguments for these flags (kept for scripts; the CLI
    itself calls `engine_from_args`)."""
    plan = plan_load(paths_from_args(args), choices_from_args(args))
    paths = plan.paths
    kwargs = {"device": getattr(args, "device", None) or "auto", "checkpoint_dir": paths.checkpoint_dir,
              "dit": paths.dit, "vae": paths.vae, "text_encoder": paths.text_encoder,
              "text_tokenizer": paths.text_tokenizer, **plan.decision.pipeline_kwargs()}
    notes = [f"memory: {plan.decision.summary()}"] + ([tiny_notice()] if paths.tiny else [])
    return kwargs, notes


def planner_from_args(args):
    """Only the 5 Hz LM, for think / format / sample / understand --audio-codes (the same decision;
    --tiny uses the tiny LM in float32)."""
    from ..loading import load_planner

    return load_planner(paths_from_args(args), choices_from_args(args, want_lm=True))
