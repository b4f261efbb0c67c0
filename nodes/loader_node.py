"""Load ACE-Step: pick the files the user already has and decide how to run them."""

from __future__ import annotations

import logging
import os
from typing import Optional

from ..acestep_core import checkpoints
from ..acestep_core.errors import CheckpointError, InputError
from . import host, model_cache, model_files
from .host import io
from .model import ACEStepModel, LoadDecision
from .widgets import AUTO, CATEGORY, MODEL

log = logging.getLogger(__name__)

DTYPES = {"auto": "auto", "bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def _memory(device):
    """ComfyUI's own memory numbers for `device` (MAX_CUDA_VRAM still simulates a smaller card)."""
    from ..acestep_core.memory.policy import memory_from_values

    total, free = host.memory_of(device)
    return memory_from_values(getattr(device, "type", str(device)), total, free)


_LABELS = {"vae": "VAE", "text_encoder": "Text encoder"}
_NOUNS = {"vae": "VAE", "text_encoder": "text encoder"}
_INSTALL = {"vae": f"ComfyUI's {model_files.COMFY_FILES['vae']} in models/vae/ (or the official vae/ folder in "
                   "models/acestep/)",
            "text_encoder": f"ComfyUI's {model_files.COMFY_FILES['text_encoder']} in models/text_encoders/ (or the "
                            "official Qwen3-Embedding-0.6B/ folder in models/acestep/)"}


def _component(kind: str, choice: str, dit_path: str, bundled: frozenset) -> Optional[str]:
    """The path of the VAE / text encoder for `choice`; None = the all-in-one DiT's own (the engine
    takes it from that file)."""
    label = _LABELS[kind]
    if choice != AUTO:
        path = model_files.resolve(kind, choice)
        if not path:
            raise CheckpointError(f"{label} '{choice}' not found in ComfyUI's model folders any more. Pick one "
                                  f"from the '{kind}' list (refresh the page after adding or removing files).")
        return path
    if kind in bundled:
        return None
    path = model_files.auto_component(kind, dit_path)
    if not path:
        raise CheckpointError(
            f"{label} 'auto' found no ACE-Step 1.5 {_NOUNS[kind]} for the DiT {os.path.basename(dit_path)}. "
            f"Put {_INSTALL[kind]}, or pick one in the '{kind}' list.")
    return path


def _resolve_components(dit: str, vae: str, text_encoder: str):
    """(DiT, VAE, text encoder) paths; a None component comes from the all-in-one DiT file."""
    dit_path = model_files.resolve("dit", dit)
    if not dit_path:
        raise CheckpointError(
            f"DiT '{dit}' not found. Put an official folder (e.g. acestep-v15-turbo/) in models/acestep/, "
            "a ComfyUI file (acestep_v1.5_turbo.safetensors) in models/diffusion_models/ or the all-in-one "
            "ace_step_1.5_turbo_aio.safetensors in models/checkpoints/.")
    bundled = checkpoints.all_in_one_parts(dit_path)
    return (dit_path, _component("vae", vae, dit_path, bundled),
            _component("text_encoder", text_encoder, dit_path, bundled))


def _tokenizer_for(path: Optional[str], kind: str):
    """Single files carry no tokenizer: use an installed official folder's, else ComfyUI's own Qwen BPE.
    `path` None: the all-in-one DiT's text encoder, a single file too."""
    if path and os.path.isdir(path):
        return None
    official = model_files.official_folders(kind)
    if official:
        return str(next(iter(official.values())))
    return host.bundled_qwen_tokenizer_dir()


class LoadModel(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        dits = model_files.dit_choices()
        return io.Schema(
            node_id="ACE15S_LoadModel",
            display_name="Load ACE-Step",
            category=CATEGORY,
            description="Loads the ACE-Step 1.5 DiT, VAE, text encoder and (optionally) the 5 Hz LM from "
                        "models/acestep/ (official folders) or diffusion_models/, vae/, text_encoders/ "
                        "(ComfyUI files). 'auto' follows the VRAM tier policy; the decision is shown.",
            inputs=[
                io.Combo.Input("dit", options=dits, default=model_files.preferred_dit(dits),
                               tooltip="Official folder in models/acestep/, a file in models/diffusion_models/, or "
                                       "an all-in-one ACE-Step 1.5 checkpoint in models/checkpoints/."),
                io.Combo.Input("vae", options=model_files.vae_choices(), default=AUTO,
                               tooltip="auto = the all-in-one DiT's own VAE, else the official vae/ folder in "
                                       "models/acestep/, else ace_1.5_vae.safetensors in models/vae/."),
                io.Combo.Input("text_encoder", options=model_files.text_encoder_choices(), default=AUTO,
                               tooltip="auto = the all-in-one DiT's own text encoder, else the official "
                                       "Qwen3-Embedding-0.6B/ folder in models/acestep/, else "
                                       "qwen_0.6b_ace15.safetensors in models/text_encoders/."),
                io.Combo.Input("lm", options=model_files.lm_choices(), default=AUTO,
                               tooltip="5 Hz planning LM. auto = the largest one that fits this device's memory tier; "
                                       "none = no LM (thinking nodes then unavailable)."),
                io.Combo.Input("offload", options=[AUTO, "on", "off"], default=AUTO,
                               tooltip="on = move components back to the CPU after each run. auto = by memory tier."),
                io.Combo.Input("dtype", options=list(DTYPES), default=AUTO,
                               tooltip="Compute dtype. auto = bf16 on capable GPUs and on CPUs with native bf16 (AVX512-BF16 / AMX), "
                                       "else fp16 / fp32; fp32 = exact parity with the official CPU results."),
            ],
            outputs=[MODEL.Output("model", display_name="model"),
                     io.String.Output("info", display_name="info", tooltip="What was loaded and why.")],
        )

    @classmethod
    def execute(cls, dit, vae, text_encoder, lm, offload, dtype) -> io.NodeOutput:
        model = load_model(dit, vae, text_encoder, lm, offload, dtype)
        summary = model.describe()
        log.info("ACE-Step loaded:\n%s", summary)
        return io.NodeOutput(model, summary, ui={"text": [summary]})


def plan_for(dit: str, vae: str, text_encoder: str, lm: str, offload: str, dtype: str):
    """(paths, choices, plan) for the widget values: the engine's `loading.plan_load` with ComfyUI's
    memory numbers. Pure: checks the choices and decides, loads nothing."""
    import dataclasses

    from ..acestep_core.loading import LoadChoices, ModelPaths, plan_load

    if dtype not in DTYPES:
        raise InputError(f"dtype must be one of {list(DTYPES)}, got '{dtype}'")
    dit_path, vae_path, te_path = _resolve_components(dit, vae, text_encoder)
    device = host.compute_device()
    lms = model_files.available_lms()
    if lm not in (AUTO, model_files.NONE) and lm not in lms:
        raise CheckpointError(
            f"LM {lm} requested but not installed: {model_files.lm_install_hint(lm)}. "
            f"Installed LMs: {', '.join(sorted(lms)) or 'none'}.")
    paths = ModelPaths(dit=dit_path, vae=vae_path, text_encoder=te_path,
                       text_tokenizer=_tokenizer_for(te_path, "text_encoder"), lms=lms)
    choices = LoadChoices(device=str(device), dtype=DTYPES[dtype], offload=offload, lm=lm)
    plan = plan_load(paths, choices, _memory(device))
    if plan.lm_path:  # a ComfyUI LM file carries no tokenizer
        plan = dataclasses.replace(plan, paths=dataclasses.replace(plan.paths, lm_tokenizer=_tokenizer_for(plan.lm_path, "lm")))
    return paths, choices, plan


def _label(path, dit: str) -> str:
    return os.path.basename(str(path)) if path else f"{dit} (its own)"


def load_model(dit: str, vae: str, text_encoder: str, lm: str, offload: str, dtype: str) -> ACEStepModel:
    """The engine's one loader (`loading.load_engine`) with ComfyUI's memory numbers; weights load on
    the CPU and ComfyUI's model manager moves them (nodes/model.py)."""
    from ..acestep_core.loading import load_engine

    paths, choices, plan = plan_for(dit, vae, text_encoder, lm, offload, dtype)
    engine = load_engine(paths, choices, device="cpu", eager_lm=True, plan=plan)
    decision = engine.decision
    reasons = [decision.summary(), *decision.reasons]
    if not engine.has_lm() and not plan.paths.lms:
        reasons.append("no LM installed: thinking / format / simple-mode nodes need one")
    elif not engine.has_lm() and lm == AUTO:
        reasons.append(f"lm auto loaded no LM; set 'lm' to {' / '.join(sorted(plan.paths.lms))} to load one "
                       "for the thinking / format / simple-mode nodes")
    device = host.compute_device()
    info = LoadDecision(
        dit=dit, vae=_label(plan.paths.vae, dit), text_encoder=_label(plan.paths.text_encoder, dit),
        lm=(decision.lm_model if engine.has_lm() else "none"), offload=decision.offload_to_cpu,
        dtype=decision.dtype, device=str(device), tier=decision.tier, reasons=reasons,
        lm_choice=lm, lm_off_reason=decision.lm_off_reason, installed_lms=tuple(sorted(plan.paths.lms or {})))
    model = ACEStepModel(engine.pipeline, engine.planner() if engine.has_lm() else None, info, device,
                         host.offload_device(), engine=engine)
    model_cache.remember(model)
    return model
