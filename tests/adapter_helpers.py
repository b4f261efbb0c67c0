"""Adapters built in tests: LoKr files made by the LyCORIS library on the tiny decoder, written
with official module names the way the official LoKr training writes them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from torch import nn

LOKR_CONFIG = {"linear_dim": 2, "linear_alpha": 4, "factor": 4, "decompose_both": False, "use_tucker": False,
               "use_scalar": False, "weight_decompose": False, "full_matrix": False, "bypass_mode": False,
               "rs_lora": False, "unbalanced_factorization": False,
               "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}


def official_view(transformer: nn.Module) -> nn.Module:
    """A module tree with the official decoder's names whose leaves ARE the decoder's Linears,
    so whatever the library patches there acts on the real decoder."""
    root = nn.Module()
    root.layers = nn.ModuleList()
    for block in transformer.layers:
        layer = nn.Module()
        for attn_name in ("self_attn", "cross_attn"):
            attn, view = getattr(block, attn_name), nn.Module()
            view.q_proj, view.k_proj, view.v_proj, view.o_proj = attn.to_q, attn.to_k, attn.to_v, attn.to_out[0]
            setattr(layer, attn_name, view)
        layer.mlp = block.mlp
        root.layers.append(layer)
    return root


def library_lokr(transformer: nn.Module, config: dict = LOKR_CONFIG, seed: int = 5, include_mlp: bool = True):
    """A LyCORIS LoKr network on the official-named view (not applied yet), with random weights."""
    from lycoris.wrapper import LycorisNetwork

    names = [n for n, m in official_view(transformer).named_modules() if isinstance(m, nn.Linear)
             and (include_mlp or ".mlp." not in n)]
    saved = {a: getattr(LycorisNetwork, a) for a in ("TARGET_REPLACE_MODULE", "TARGET_REPLACE_NAME")}
    LycorisNetwork.apply_preset({"target_module": [], "target_name": [re.escape(n) + "$" for n in names]})
    try:
        net = LycorisNetwork(official_view(transformer), multiplier=1.0, lora_dim=config["linear_dim"],
                             alpha=config["linear_alpha"], network_module="lokr", factor=config["factor"],
                             decompose_both=config["decompose_both"], full_matrix=config["full_matrix"],
                             rs_lora=config["rs_lora"])
    finally:
        for a, v in saved.items():
            setattr(LycorisNetwork, a, v)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for lora in net.loras:
            for name, param in lora.named_parameters():
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    return net


def write_lokr(net, path: Path, config: dict | None = LOKR_CONFIG) -> Path:
    """Save like the official LoKr training: LyCORIS keys, the config in the metadata."""
    from safetensors.torch import save_file

    # Each module's own LyCORIS state dict, under the name the network registers it by.
    state = {f"{lora.lora_name}.{k}": v.detach().float().contiguous()
             for lora in net.loras for k, v in lora.state_dict().items()}
    metadata = {"algo": "lokr", "format": "lycoris"}
    if config is not None:
        metadata["lokr_config"] = json.dumps(config)
    save_file(state, str(path), metadata=metadata)
    return path
