"""Which checkpoints and memory settings a CLI run uses, and what to tell the user about them."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import CheckpointError
from ..prompts import TRACK_TASKS

GET_WEIGHTS_HELP = (
    "No ACE-Step 1.5 weights found in {root}.\n"
    "Download the official checkpoints (about 10 GB) into one folder, e.g. with huggingface-cli:\n"
    "  huggingface-cli download ACE-Step/Ace-Step1.5 --local-dir checkpoints\n"
    "which gives checkpoints/acestep-v15-turbo, checkpoints/vae, checkpoints/Qwen3-Embedding-0.6B and\n"
    "checkpoints/acestep-5Hz-lm-1.7B; then pass --checkpoint-dir checkpoints (or set ACESTEP_CHECKPOINTS_DIR).\n"
    "ComfyUI files work too: --dit .../diffusion_models/acestep_v1.5_turbo.safetensors --vae .../vae/ace_1.5_vae.safetensors\n"
    "--text-encoder .../text_encoders/qwen_0.6b_ace15.safetensors --text-tokenizer <Qwen tokenizer folder>.\n"
    "To check the install without weights, add --tiny (tiny random weights: it makes noise, not music)."
)


def tiny_notice() -> str:
    return ("NOTE: this ran the TINY RANDOM-WEIGHT checkpoints (--tiny) to prove the install. "
            "The output is noise, not music; point --checkpoint-dir at real ACE-Step 1.5 weights for songs.")


def tiny_checkpoints() -> dict[str, Path]:
    """The tiny set named by ACESTEP_TINY_DIR; otherwise random ones built once in the user's cache."""
    from ..tiny import build_tiny_checkpoints, find_tiny_fixtures

    found = find_tiny_fixtures()
    if found is not None:
        return found
    return build_tiny_checkpoints()


# The default DiT when several are installed: the official default first, then the XL turbo, then the rest.
DIT_PREFERENCE = ("acestep-v15-turbo", "acestep-v15-xl-turbo", "acestep-v15-turbo-shift3", "acestep-v15-turbo-shift1",
                  "acestep-v15-sft", "acestep-v15-base", "acestep-v15-xl-sft", "acestep-v15-xl-base")


def default_dit(root: Path | None, fits_xl: bool = True) -> str | None:
    """The installed DiT folder a run uses when no --dit is given (XL only when it fits)."""
    if root is None or not root.is_dir():
        return None
    from ..memory.policy import is_xl_name

    installed = [name for name in DIT_PREFERENCE if (root / name / "config.json").is_file()]
    installed += sorted(p.name for p in root.glob("acestep-v15-*") if (p / "config.json").is_file() and p.name not in installed)
    usable = [name for name in installed if fits_xl or not is_xl_name(name)]
    return (usable or installed or [None])[0]


def pipeline_kwargs(args) -> tuple[dict, list[str]]:
    from ..memory.policy import decide, detect_device_memory, xl_rule
    from ..pipeline import resolve_device

    notes: list[str] = []
    device = resolve_device(args.device)
    memory = detect_device_memory(device)
    root = Path(args.checkpoint_dir) if args.checkpoint_dir else None
    dit = args.dit
    if not args.tiny and not (args.dit or args.vae or args.text_encoder):
        dit = default_dit(root, fits_xl=xl_rule(memory.total_gb, memory.device_type) != "refuse")
    decision = decide(memory, requested_lm=getattr(args, "lm_model", None), dit=None if args.tiny else dit)
    decision.check_dit()
    notes.append(f"memory: {decision.summary()}")
    kwargs: dict = {"device": device}
    kwargs["dtype"] = decision.dtype if args.dtype == "auto" else args.dtype
    offload = {"auto": decision.offload_to_cpu, "on": True, "off": False}[args.offload]
    kwargs["offload_to_cpu"] = offload
    kwargs["offload_dit_to_cpu"] = decision.offload_dit_to_cpu if args.offload == "auto" else offload
    kwargs["vae_chunk_frames"] = decision.vae_chunk_frames

    if args.tiny:
        tiny = tiny_checkpoints()
        kwargs.update(dit=tiny["dit"], vae=tiny["vae"], text_encoder=tiny["text_encoder"], dtype="float32")
        if getattr(args, "task_type", None) in TRACK_TASKS:
            kwargs["dit"] = tiny["dit_base"]  # the track tasks need a base model
        kwargs["_tiny_lm"] = str(tiny["lm"])
        notes.append(tiny_notice())
    else:
        explicit = args.dit or args.vae or args.text_encoder
        if not explicit and dit is None:
            raise CheckpointError(GET_WEIGHTS_HELP.format(root=root.resolve() if root else "(no --checkpoint-dir)"))
        kwargs.update(checkpoint_dir=root if root and root.is_dir() else None, dit=dit, vae=args.vae,
                      text_encoder=args.text_encoder, text_tokenizer=args.text_tokenizer)
    kwargs["_labels"] = {k: str(kwargs[k]) for k in ("dit", "vae", "text_encoder") if kwargs.get(k)}
    kwargs["_decision"] = decision
    return kwargs, notes


def pop_private(kwargs: dict) -> dict:
    return {k: v for k, v in kwargs.items() if not k.startswith("_")}
