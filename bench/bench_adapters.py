"""Cost of adapters on a decoder of the real ACE-Step 1.5 width (random weights).

Writes a rank-64 PEFT LoRA (q/k/v/o of self and cross attention, every layer) and a LoKr with the
official LoKr training defaults (linear_dim 64, linear_alpha 128, factor -1) to a temporary folder,
then prints: the time to patch each into the decoder and take it out again, and seconds per DiT
step without adapters, with the LoRA and with the LoKr (LyCORIS rebuilds the LoKr weight each call).

    python bench/bench_adapters.py                    # 24 layers, fp32 on CPU (about 7 GB)
    python bench/bench_adapters.py --layers 4         # fewer layers, same width (smaller machines)
    python bench/bench_adapters.py --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path

import torch

from acestep_core.adapters import ScaledAdapter, decoder_adapters, load_adapter
from acestep_core.adapters.naming import lycoris_name, official_module
from acestep_core.dit import PUBLISHED_DIT_DEFAULTS, _build_modules

ATTENTION = re.compile(r"layers\.\d+\.(self|cross)_attn\.(to_q|to_k|to_v|to_out\.0)$")


def randomize(module: torch.nn.Module, device, dtype) -> torch.nn.Module:
    module = module.to_empty(device=device)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.02)
    return module.to(dtype).eval().requires_grad_(False)


def write_peft(folder: Path, transformer, rank: int) -> Path:
    from safetensors.torch import save_file

    folder.mkdir()
    tensors = {}
    for name, m in transformer.named_modules():
        if ATTENTION.search(name):
            key = f"base_model.model.{official_module(name)}"
            tensors[f"{key}.lora_A.weight"] = torch.randn(rank, m.in_features) * 0.01
            tensors[f"{key}.lora_B.weight"] = torch.randn(m.out_features, rank) * 0.01
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}))
    return folder


def write_lokr(path: Path, transformer) -> Path:
    """LoKr tensors shaped as LyCORIS builds them for the official defaults, under official names."""
    from lycoris import create_lycoris
    from lycoris.wrapper import PRESET
    from safetensors.torch import save_file

    config = {"linear_dim": 64, "linear_alpha": 128, "factor": -1}
    names = [n for n, _ in transformer.named_modules() if ATTENTION.search(n)]
    PRESET["bench"] = {"target_module": [], "target_name": [re.escape(n) + "$" for n in names]}
    try:
        net = create_lycoris(transformer, 1.0, linear_dim=64, linear_alpha=128, algo="lokr", factor=-1, preset="bench")
    finally:
        PRESET.pop("bench")
    renames = {lycoris_name(n): lycoris_name(official_module(n)) for n in names}
    state = {}
    for lora in net.loras:
        for key, value in lora.state_dict().items():
            state[f"{renames[lora.lora_name]}.{key}"] = torch.randn(value.shape) * 0.01 if value.ndim else value.float()
    save_file(state, str(path), metadata={"algo": "lokr", "lokr_config": json.dumps(config)})
    return path


def step_seconds(transformer, frames, device, dtype, repeats) -> float:
    hidden = transformer.config.hidden_size
    x = torch.randn(1, frames, 64, device=device, dtype=dtype)
    context = torch.randn(1, frames, 128, device=device, dtype=dtype)
    enc = torch.randn(1, 300, hidden, device=device, dtype=dtype)
    t = torch.full((1,), 0.5, device=device, dtype=dtype)
    with torch.no_grad():
        transformer(hidden_states=x, timestep=t, timestep_r=t, encoder_hidden_states=enc, context_latents=context)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            transformer(hidden_states=x, timestep=t, timestep_r=t, encoder_hidden_states=enc, context_latents=context)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--seconds", type=float, default=30.0, help="audio length of the timed DiT step")
    parser.add_argument("--rank", type=int, default=64)
    args = parser.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    config = dict(PUBLISHED_DIT_DEFAULTS, num_hidden_layers=args.layers,
                  layer_types=["sliding_attention", "full_attention"] * (args.layers // 2) + ["sliding_attention"] * (args.layers % 2))
    transformer = randomize(_build_modules(config)["transformer"], device, dtype)
    print(f"decoder: {args.layers} layers, hidden {config['hidden_size']}, "
          f"{sum(p.numel() for p in transformer.parameters()) / 1e9:.2f} B parameters, {args.dtype} on {device}")
    repeats = 3 if device.type == "cuda" else 1
    frames = int(args.seconds * 25)
    with tempfile.TemporaryDirectory() as tmp:
        adapters = {"none": None,
                    f"PEFT LoRA r{args.rank}": load_adapter(write_peft(Path(tmp) / "peft", transformer, args.rank)),
                    "LoKr (official defaults)": load_adapter(write_lokr(Path(tmp) / "lokr_weights.safetensors", transformer))}
        host = decoder_adapters(transformer)
        print(f"{'adapter':>26} {'tensors MB':>10} {'patch s':>8} {'remove s':>8} {'s/step':>8}")
        for label, adapter in adapters.items():
            if adapter is None:
                print(f"{label:>26} {'-':>10} {'-':>8} {'-':>8} {step_seconds(transformer, frames, device, dtype, repeats):8.3f}")
                continue
            size = sum(t.numel() * t.element_size() for t in adapter.tensors.values()) / 1024**2
            start = time.perf_counter()
            host.apply([ScaledAdapter(adapter, 1.0)])
            patch = time.perf_counter() - start
            step = step_seconds(transformer, frames, device, dtype, repeats)
            start = time.perf_counter()
            host.remove()
            remove = time.perf_counter() - start
            print(f"{label:>26} {size:10.1f} {patch:8.3f} {remove:8.3f} {step:8.3f}")


if __name__ == "__main__":
    main()
