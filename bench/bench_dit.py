"""DiT step time and VAE decode time at the real ACE-Step 1.5 2B sizes (random weights).

Prints seconds per DiT step for 60 s and 240 s of audio (turbo, no CFG; base doubles the batch),
VAE decode seconds per 60 s of audio, and peak memory (RSS on CPU, max_memory_allocated on CUDA).

    python bench/bench_dit.py                      # fp32 on CPU
    python bench/bench_dit.py --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import torch

from acestep_core.dit import PUBLISHED_DIT_DEFAULTS, _build_modules, _restore_fsq_buffers
from acestep_core.vae import PUBLISHED_VAE_CONFIG, vae_decode


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def randomize(module: torch.nn.Module, device, dtype) -> torch.nn.Module:
    """Materialise a meta-built module with random weights (fast, no real init)."""
    module = module.to_empty(device=device)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.02)
    return module.to(dtype).eval().requires_grad_(False)


def wait_for_quiet(limit: float = 1.5, timeout: float = 300) -> float:
    start = time.time()
    while os.getloadavg()[0] > limit and time.time() - start < timeout:
        time.sleep(5)
    return os.getloadavg()[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--seconds", default="60,240")
    parser.add_argument("--vae-seconds", type=float, default=60.0)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    cuda = device.type == "cuda"

    def peak() -> str:
        if cuda:
            return f"{torch.cuda.max_memory_allocated() / 1024**3:.2f} GB allocated"
        return f"{peak_rss_gb():.2f} GB RSS"

    config = dict(PUBLISHED_DIT_DEFAULTS, layer_types=["sliding_attention", "full_attention"] * 12)
    modules = _build_modules(config)
    transformer = randomize(modules["transformer"], device, dtype)
    params = sum(p.numel() for p in transformer.parameters())
    print(f"DiT decoder: {params / 1e9:.2f} B parameters, {args.dtype} on {device}; threads {torch.get_num_threads()}")
    print(f"{'audio':>8} {'frames':>7} {'s/step':>8} {'load':>5}  peak memory")
    for seconds in [float(s) for s in args.seconds.split(",")]:
        frames = int(seconds * 25)
        x = torch.randn(1, frames, 64, device=device, dtype=dtype)
        context = torch.randn(1, frames, 128, device=device, dtype=dtype)
        enc = torch.randn(1, 300, 2048, device=device, dtype=dtype)
        t = torch.full((1,), 0.5, device=device, dtype=dtype)
        with torch.no_grad():
            transformer(hidden_states=x, timestep=t, timestep_r=t, encoder_hidden_states=enc, context_latents=context)
            load = wait_for_quiet()
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            repeats = 3 if cuda else 1
            for _ in range(repeats):
                transformer(hidden_states=x, timestep=t, timestep_r=t, encoder_hidden_states=enc, context_latents=context)
            if cuda:
                torch.cuda.synchronize()
            per_step = (time.perf_counter() - start) / repeats
        print(f"{seconds:7.0f}s {frames:7d} {per_step:8.2f} {load:5.2f}  {peak()}")
    del transformer, modules
    if cuda:
        torch.cuda.empty_cache()

    from diffusers import AutoencoderOobleck

    with torch.device("meta"):
        vae = AutoencoderOobleck(**PUBLISHED_VAE_CONFIG)
    vae = randomize(vae, device, dtype)
    frames = int(args.vae_seconds * 25)
    latents = torch.randn(1, frames, 64, device=device, dtype=dtype) * 0.5
    vae_decode(vae, latents[:, :64], chunk_frames=256)  # warm-up
    load = wait_for_quiet()
    start = time.perf_counter()
    vae_decode(vae, latents, chunk_frames=256)
    elapsed = time.perf_counter() - start
    print(f"VAE decode: {args.vae_seconds:.0f} s of audio in {elapsed:.2f} s "
          f"({elapsed / args.vae_seconds * 60:.2f} s per 60 s), chunk 256, load {load:.2f}; peak {peak()}")


if __name__ == "__main__":
    main()
