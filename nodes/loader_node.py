"""Load ACE-Step: pick the files the user already has and decide how to run them."""

from __future__ import annotations

import logging
import os

from ..acestep_core.errors import CheckpointError, InputError
from . import host, model_cache, model_files
from .host import io
from .model import ACEStepModel, LoadDecision
from .widgets import AUTO, CATEGORY, MODEL

log = logging.getLogger(__name__)

DTYPES = {"auto": "auto", "bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def _memory_decision(device, requested_lm, available_lms, dit=None):
    """The VRAM-tier policy's decision for this device (auto LM, offload, limits, the XL rules)."""
    from ..acestep_core.memory.policy import decide, memory_from_values

    total, free = host.memory_of(device)
    memory = memory_from_values(getattr(device, "type", str(device)), total, free)
    return decide(memory, env=os.environ, requested_lm=requested_lm, available_lms=available_lms, dit=dit)


def _resolve_dtype(choice: str, decision) -> str:
    """The widget's dtype; `auto` is the memory decision's (bf16 on GPUs and on CPUs with native bf16)."""
    return decision.dtype if choice == AUTO else DTYPES[choice]


def _resolve_components(dit: str, vae: str, text_encoder: str):
    dit_path = model_files.resolve("dit", dit)
    if not dit_path:
        raise CheckpointError(
            f"DiT '{dit}' not found. Put an official folder (e.g. acestep-v15-turbo/) in models/acestep/ "
            "or a ComfyUI file (acestep_v1.5_turbo.safetensors) in models/diffusion_models/.")
    root = model_files.checkpoint_root_of(dit_path)
    vae_path = model_files.resolve("vae", vae) if vae != AUTO else model_files.sibling_official("vae", root)
    te_path = (model_files.resolve("text_encoder", text_encoder) if text_encoder != AUTO
               else model_files.sibling_official("text_encoder", root))
    if not vae_path:
        raise CheckpointError(
            f"VAE '{vae}' not found. With 'auto' an official vae/ folder must sit in models/acestep/; "
            "otherwise pick ace_1.5_vae.safetensors from models/vae/.")
    if not te_path:
        raise CheckpointError(
            f"Text encoder '{text_encoder}' not found. With 'auto' an official Qwen3-Embedding-0.6B/ folder "
            "must sit in models/acestep/; otherwise pick qwen_0.6b_ace15.safetensors from models/text_encoders/.")
    return dit_path, vae_path, te_path


def _tokenizer_for(path: str, kind: str):
    """Single files carry no tokenizer: use an installed official folder's, else ComfyUI's own Qwen BPE."""
    if os.path.isdir(path):
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
                               tooltip="Official folder in models/acestep/ or a file in models/diffusion_models/."),
                io.Combo.Input("vae", options=model_files.vae_choices(), default=AUTO,
                               tooltip="auto = the vae/ folder beside the official DiT folder."),
                io.Combo.Input("text_encoder", options=model_files.text_encoder_choices(), default=AUTO,
                               tooltip="auto = the Qwen3-Embedding-0.6B/ folder beside the official DiT folder."),
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


def load_model(dit: str, vae: str, text_encoder: str, lm: str, offload: str, dtype: str) -> ACEStepModel:
    from ..acestep_core import ACEStepPipeline

    if dtype not in DTYPES:
        raise InputError(f"dtype must be one of {list(DTYPES)}, got '{dtype}'")
    dit_path, vae_path, te_path = _resolve_components(dit, vae, text_encoder)
    device = host.compute_device()
    lms = model_files.available_lms()

    requested = None if lm == AUTO else lm
    if requested and requested != model_files.NONE and requested not in lms:
        raise CheckpointError(
            f"LM {requested} requested but not found. Put acestep-5Hz-lm-{requested}/ in models/acestep/ "
            f"or qwen_{requested.lower()}_ace15.safetensors in models/text_encoders/; found: {sorted(lms) or 'none'}.")
    decision = _memory_decision(device, requested, sorted(lms), dit=dit)
    decision.check_dit()
    reasons = [decision.summary(), *decision.reasons]

    if lm == model_files.NONE:
        lm_size = None
        reasons.append("LM off (lm = none)")
    elif requested:
        lm_size = requested
        if decision.lm_model != requested:
            reasons.append(f"memory tier suggests LM {decision.lm_model}; loading {requested} as asked")
    else:
        lm_size = decision.lm_model if decision.init_lm and decision.lm_model != model_files.NONE else None
        if lm_size and lm_size not in lms:
            reasons.append(f"policy chose LM {lm_size} but it is not installed")
            lm_size = None
        if lm_size is None and not lms:
            reasons.append("no LM installed: thinking / format / simple-mode nodes need one")

    if offload == AUTO:
        offload_on = bool(getattr(decision, "offload_to_cpu", False))
    else:
        offload_on = offload == "on"
    compute_dtype = _resolve_dtype(dtype, decision)

    pipeline = ACEStepPipeline.from_pretrained(
        dit=dit_path, vae=vae_path, text_encoder=te_path, text_tokenizer=_tokenizer_for(te_path, "text_encoder"),
        device="cpu", dtype=compute_dtype, config_override=model_files.sidecar_config(dit_path),
        vae_config_override=model_files.sidecar_config(vae_path))
    planner = None
    if lm_size:
        from ..acestep_core.lm import LMPlanner

        lm_dtype = compute_dtype if dtype != AUTO else ("float32" if compute_dtype == "float32" else decision.lm_dtype)
        planner = LMPlanner.from_pretrained(lms[lm_size], tokenizer_path=_tokenizer_for(lms[lm_size], "lm"),
                                            device="cpu", dtype=lm_dtype)

    info = LoadDecision(
        dit=dit, vae=os.path.basename(vae_path), text_encoder=os.path.basename(te_path),
        lm=lm_size or "none", offload=offload_on, dtype=compute_dtype, device=str(device),
        tier=decision.tier, reasons=reasons)
    model = ACEStepModel(pipeline, planner, info, device, host.offload_device())
    model_cache.remember(model)
    return model
