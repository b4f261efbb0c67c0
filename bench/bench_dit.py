"""DiT step time at the real ACE-Step 1.5 sizes, 2B and XL side by side (random weights), and the
VAE decode time.

Prints seconds per DiT step for 60 s and 240 s of audio (turbo, no CFG; base doubles the batch) and
peak memory (RSS of the process on CPU, max_memory_allocated on CUDA), one child process per model so
each peak is its own; then VAE decode seconds per 60 s of audio.

    python bench/bench_dit.py                                  # 2B and XL, fp32 on CPU
    python bench/bench_dit.py --dtype bfloat16 --no-vae        # XL at ~8 GB instead of ~16 GB
    python bench/bench_dit.py --device cuda --dtype bfloat16
    python bench/bench_dit.py --model xl --seconds 60          # one model, one length
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch

from acestep_core.dit import PUBLISHED_DIT_DEFAULTS, _build_modules
from acestep_core.vae import PUBLISHED_VAE_CONFIG, vae_decode
from acestep_core.xl import PUBLISHED_XL_DEFAULTS

MODELS = {"2b": PUBLISHED_DIT_DEFAULTS, "xl": {**PUBLISHED_DIT_DEFAULTS, **PUBLISHED_XL_DEFAULTS}}
CONDITION_TOKENS = 300  # a typical packed lyrics + timbre + caption sequence


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def available_ram_gb() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024**2
    return float("inf")


def randomize(module: torch.nn.Module, device, dtype) -> torch.nn.Module:
    """Materialise a meta-built module with random weights (fast, no real init), straight in `dtype`."""
    # nn.Module.to: diffusers' override warns about fp32-kept modules, which these models have none of
    module = torch.nn.Module.to(module, dtype).to_empty(device=device)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.02)
    return module.eval().requires_grad_(False)


def wait_for_quiet(limit: float = 1.5, timeout: float = float(os.environ.get("BENCH_QUIET_TIMEOUT", 300))) -> float:
    start = time.time()
    while os.getloadavg()[0] > limit and time.time() - start < timeout:
        time.sleep(5)
    return os.getloadavg()[0]


def model_config(name: str) -> dict:
    config = dict(MODELS[name])
    config["layer_types"] = ["sliding_attention" if (i + 1) % 2 else "full_attention"
                             for i in range(config["num_hidden_layers"])]
    return config


def run_one(args) -> dict:
    """Time one model's DiT in this process; returns the figures."""
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    cuda = device.type == "cuda"
    config = model_config(args.model)
    with torch.device("meta"):
        transformer = _build_modules(config)["transformer"]
    params = sum(p.numel() for p in transformer.parameters())
    weight_gb = params * torch.finfo(dtype).bits / 8 / 1024**3
    if not cuda and weight_gb * 1.15 + 1 > available_ram_gb():
        return {"model": args.model, "skipped": f"needs ~{weight_gb * 1.15 + 1:.1f} GB RAM, "
                                                f"{available_ram_gb():.1f} GB available"}
    transformer = randomize(transformer, device, dtype)
    encoder_width = config.get("encoder_hidden_size") or config["hidden_size"]
    rows = []
    for seconds in [float(s) for s in args.seconds.split(",")]:
        frames = int(seconds * 25)
        x = torch.randn(1, frames, 64, device=device, dtype=dtype)
        context = torch.randn(1, frames, 128, device=device, dtype=dtype)
        enc = torch.randn(1, CONDITION_TOKENS, encoder_width, device=device, dtype=dtype)
        t = torch.full((1,), 0.5, device=device, dtype=dtype)

        def step(frames_used=frames):
            transformer(hidden_states=x[:, :frames_used], timestep=t, timestep_r=t, encoder_hidden_states=enc,
                        context_latents=context[:, :frames_used])

        with torch.no_grad():
            step(min(frames, 250))  # warm-up on a short input (kernels, allocator)
            load = wait_for_quiet()
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            repeats = args.repeats or (3 if cuda else 1)
            for _ in range(repeats):
                step()
            if cuda:
                torch.cuda.synchronize()
            per_step = (time.perf_counter() - start) / repeats
        peak = torch.cuda.max_memory_allocated() / 1024**3 if cuda else peak_rss_gb()
        rows.append({"seconds": seconds, "frames": frames, "s_per_step": per_step, "load": load, "peak_gb": peak})
    return {"model": args.model, "params_b": params / 1e9, "weight_gb": weight_gb, "dtype": args.dtype,
            "device": str(device), "threads": torch.get_num_threads(),
            "peak_kind": "max_memory_allocated" if cuda else "RSS", "rows": rows}


def vae_figures(args) -> str:
    from diffusers import AutoencoderOobleck

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
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
    return (f"VAE decode: {args.vae_seconds:.0f} s of audio in {elapsed:.2f} s "
            f"({elapsed / args.vae_seconds * 60:.2f} s per 60 s), chunk 256, load {load:.2f}")


def print_table(results: list[dict]) -> None:
    print(f"{'model':>5} {'params':>7} {'weights':>8} {'audio':>6} {'frames':>6} {'s/step':>8} {'load':>5}  peak memory")
    for result in results:
        if "skipped" in result:
            print(f"{result['model']:>5}  skipped: {result['skipped']}")
            continue
        for row in result["rows"]:
            print(f"{result['model']:>5} {result['params_b']:6.2f}B {result['weight_gb']:6.2f}GB {row['seconds']:5.0f}s "
                  f"{row['frames']:6d} {row['s_per_step']:8.2f} {row['load']:5.2f}  {row['peak_gb']:.2f} GB "
                  f"{result['peak_kind']}")
    first = next((r for r in results if "rows" in r), None)
    if first:
        print(f"({first['dtype']} on {first['device']}, {first['threads']} threads, {CONDITION_TOKENS} condition tokens; "
              "peak = whole process)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="both", choices=["both", *MODELS])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--seconds", default="60,240")
    parser.add_argument("--repeats", type=int, default=0, help="timed steps per length (default 3 on CUDA, 1 on CPU)")
    parser.add_argument("--vae-seconds", type=float, default=60.0)
    parser.add_argument("--no-vae", action="store_true")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # child → parent
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.model != "both":
        result = run_one(args)
        print(json.dumps(result) if args.json else "", flush=True)
        if not args.json:
            print_table([result])
        return

    results = []
    for name in MODELS:  # a fresh process per model: each peak is that model's own
        child = [sys.executable, os.path.abspath(__file__), "--model", name, "--json", "--device", args.device,
                 "--dtype", args.dtype, "--seconds", args.seconds, "--repeats", str(args.repeats),
                 "--threads", str(args.threads)]
        out = subprocess.run(child, capture_output=True, text=True)
        lines = out.stdout.strip().splitlines()
        if out.returncode != 0 or not lines:  # e.g. killed for memory: keep the other model's figures
            results.append({"model": name, "skipped": f"child exited with {out.returncode}: {out.stderr.strip()[-200:]}"})
        else:
            results.append(json.loads(lines[-1]))
        print_table(results[-1:])
    print_table(results)
    if not args.no_vae:
        print(vae_figures(args))


if __name__ == "__main__":
    main()
