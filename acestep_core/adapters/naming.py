"""Adapter module names: the official decoder's (`layers.0.self_attn.q_proj`) and ours
(diffusers: `layers.0.self_attn.to_q`), through the checkpoint key mapping of `dit.py`."""

from __future__ import annotations

from torch import nn

from ..dit import diffusers_to_official_key, official_to_diffusers_key

LYCORIS_PREFIX = "lycoris"
KOHYA_PREFIX = "lora_unet_"  # ComfyUI's key map: `lora_unet_` + the diffusion model's path, dots made underscores


def our_module(official_path: str) -> str:
    """`layers.0.self_attn.o_proj` → `layers.0.self_attn.to_out.0` (decoder-relative paths)."""
    _, key = official_to_diffusers_key(f"decoder.{official_path}.weight")
    return key[: -len(".weight")]


def official_module(our_path: str) -> str:
    key = diffusers_to_official_key("transformer", f"{our_path}.weight")
    return key[len("decoder."): -len(".weight")]


def lycoris_name(path: str) -> str:
    """LyCORIS names a module by its dotted path with every dot made an underscore."""
    return f"{LYCORIS_PREFIX}_{path}".replace(".", "_")


def lycoris_renames(transformer: nn.Module) -> dict[str, str]:
    """Official LyCORIS module name → the same module's LyCORIS name on our decoder.

    Built from our modules (not by splitting the file's names) because `self_attn` has an
    underscore of its own."""
    return {lycoris_name(official_module(name)): lycoris_name(name)
            for name, _ in transformer.named_modules() if name}


def kohya_renames(transformer: nn.Module) -> dict[str, list[str]]:
    """ComfyUI's flat LoRA name (`lora_unet_decoder_layers_0_self_attn_q_proj`) → our modules it can mean.

    Made from the decoder's own modules, as ComfyUI makes its key map from the model's, since the
    underscores of `self_attn` or `time_embed_r` cannot be told from the dots; more than one module
    for a name means the name is ambiguous."""
    names: dict[str, list[str]] = {}
    for name, module in transformer.named_modules():
        if isinstance(module, nn.Linear):
            flat = KOHYA_PREFIX + f"decoder.{official_module(name)}".replace(".", "_")
            names.setdefault(flat, []).append(name)
    return names


def linear_shapes(transformer: nn.Module) -> dict[str, tuple[int, int]]:
    """(out_features, in_features) of every Linear in the decoder, by our module name."""
    return {name: (m.out_features, m.in_features) for name, m in transformer.named_modules()
            if isinstance(m, nn.Linear)}
