"""Peak memory per generation stage, with and without offload, for the real model sizes.

Builds the real configurations with random weights (nothing is downloaded): the 0.6B and 1.7B 5 Hz
LMs (Qwen3ForCausalLM, vocabulary 217204), the Qwen3-Embedding-0.6B text encoder, the 2B DiT
(diffusers AceStepTransformer1DModel + AceStepConditionEncoder) and the Oobleck VAE, then runs each
stage once on a 30 s song: LM prefill + decode → text encoder → condition encoder + one DiT step →
VAE decode (tiled at the policy's window, and in one window for comparison).

CPU (default when there is no GPU): stages run one after another with only that stage's component
alive, and the process's peak RSS is read from the kernel (VmHWM, reset before each stage). The peak
a device would see with offload on / off is then derived from the measured figures: offload off =
weights of every resident component + the running stage's extra memory; offload on = the running
component's weights + its extra memory (+ the DiT when only idle components are offloaded).

GPU (`--device cuda`): the same stages run through `OffloadManager` with offload off, CPU and
CPU+DiT, and `torch.cuda.max_memory_allocated()` is recorded per stage.

    python bench/memory.py                    # CPU, fp32, a few minutes, ~10 GB RAM at the DiT stage
    python bench/memory.py --device cuda --dtype bfloat16
    python bench/memory.py --json out.json --skip-untiled-vae
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from acestep_core.memory.offload import OffloadManager  # noqa: E402
from acestep_core.memory.vae_fallback import decode_fn_for_vae  # noqa: E402

GB = 1024**3
SECONDS = 30
FRAMES = SECONDS * 25  # 25 latent frames per second

LM_CONFIGS = {  # docs/checkpoints.md#text-encoder-and-lm-keys
    "0.6B": dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
                 num_key_value_heads=8, max_position_embeddings=32768),
    "1.7B": dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
                 num_key_value_heads=8, max_position_embeddings=40960),
}
LM_PROMPT_TOKENS = 600  # caption + lyrics chat prompt of a typical song
LM_NEW_TOKENS = 32  # enough to exercise the KV cache; memory does not grow much further


# ----------------------------------------------------------------------------------------------
# Process memory (Linux)
# ----------------------------------------------------------------------------------------------


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def rss() -> int:
    return _status_kb("VmRSS")


def reset_peak_rss() -> None:
    """Reset the kernel's high-water mark (VmHWM) to the current RSS."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def peak_rss() -> int:
    return _status_kb("VmHWM")


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    try:  # return freed heap pages to the OS so the next stage starts from a true baseline
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


# ----------------------------------------------------------------------------------------------
# Components (random weights, real sizes)
# ----------------------------------------------------------------------------------------------


def build_lm(size: str, dtype: torch.dtype):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(vocab_size=217204, head_dim=128, tie_word_embeddings=True, rope_theta=1_000_000.0,
                         rms_norm_eps=1e-6, **LM_CONFIGS[size])
    return Qwen3ForCausalLM(config).to(dtype).eval()


def build_text_encoder(dtype: torch.dtype):
    from transformers import Qwen3Config, Qwen3Model

    config = Qwen3Config(vocab_size=151669, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                         num_attention_heads=16, num_key_value_heads=8, head_dim=128,
                         max_position_embeddings=32768, rope_theta=1_000_000.0, tie_word_embeddings=True)
    return Qwen3Model(config).to(dtype).eval()


def build_dit(dtype: torch.dtype):
    from diffusers import AceStepConditionEncoder, AceStepTransformer1DModel

    # Class defaults are the published 2B config (docs/architecture.md#dit-configuration).
    return torch.nn.ModuleDict({
        "condition_encoder": AceStepConditionEncoder(),
        "transformer": AceStepTransformer1DModel(),
    }).to(dtype).eval()


def build_vae(dtype: torch.dtype):
    from diffusers import AutoencoderOobleck

    vae = AutoencoderOobleck(encoder_hidden_size=128, downsampling_ratios=[2, 4, 4, 6, 10],
                             channel_multiples=[1, 2, 4, 8, 16], decoder_channels=128, decoder_input_channels=64,
                             audio_channels=2, sampling_rate=48000)
    return vae.to(dtype).eval()


def weight_bytes(module: torch.nn.Module) -> int:
    seen, total = set(), 0
    for tensor in list(module.parameters()) + list(module.buffers()):
        if tensor.data_ptr() in seen:
            continue  # tied embeddings count once
        seen.add(tensor.data_ptr())
        total += tensor.numel() * tensor.element_size()
    return total


# ----------------------------------------------------------------------------------------------
# Stages
# ----------------------------------------------------------------------------------------------


def run_lm(lm, device, dtype):
    ids = torch.randint(0, 151643, (1, LM_PROMPT_TOKENS), device=device)
    lm.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=LM_NEW_TOKENS,
                min_new_tokens=LM_NEW_TOKENS, do_sample=False, pad_token_id=151643)


def run_text_encoder(te, device, dtype):
    caption = torch.randint(0, 151643, (1, 256), device=device)
    lyrics = torch.randint(0, 151643, (1, 512), device=device)
    te(input_ids=caption).last_hidden_state
    te.embed_tokens(lyrics)  # lyrics use only the embedding table (docs/architecture.md#text-encoder)


def run_dit(dit, device, dtype):
    enc, _ = dit["condition_encoder"](
        text_hidden_states=torch.randn(1, 256, 1024, device=device, dtype=dtype),
        text_attention_mask=torch.ones(1, 256, device=device, dtype=torch.long),
        lyric_hidden_states=torch.randn(1, 512, 1024, device=device, dtype=dtype),
        lyric_attention_mask=torch.ones(1, 512, device=device, dtype=torch.long),
        refer_audio_acoustic_hidden_states_packed=torch.randn(1, 750, 64, device=device, dtype=dtype),
        refer_audio_order_mask=torch.zeros(1, device=device, dtype=torch.long),
    )
    t = torch.full((1,), 0.5, device=device, dtype=dtype)
    dit["transformer"](
        hidden_states=torch.randn(1, FRAMES, 64, device=device, dtype=dtype), timestep=t, timestep_r=t,
        encoder_hidden_states=enc, context_latents=torch.randn(1, FRAMES, 128, device=device, dtype=dtype),
    )


def make_vae_stage(chunk_frames: int | None):
    def run_vae(vae, device, dtype):
        latents = torch.randn(1, 64, FRAMES)
        chunk = chunk_frames or FRAMES
        decode_fn_for_vae(vae, output_device="cpu")(latents, chunk, torch.device(device))

    return run_vae


@dataclass
class StageResult:
    stage: str
    component: str
    weights_gb: float
    peak_gb: float  # CPU: process peak RSS during the stage; GPU: max_memory_allocated
    extra_gb: float  # peak minus memory before the stage (activations, caches, workspace)
    seconds: float


def stages(args) -> list[tuple[str, str, callable, callable]]:
    """(stage name, component name, builder, runner) in pipeline order."""
    out = []
    for size in args.lms:
        out.append((f"LM {size}: {LM_PROMPT_TOKENS}-token prompt + {LM_NEW_TOKENS} tokens", f"lm_{size}",
                    lambda dt, s=size: build_lm(s, dt), run_lm))
    out.append(("text encoder: caption 256 + lyrics 512 tokens", "text_encoder", build_text_encoder, run_text_encoder))
    out.append((f"DiT 2B: condition encoder + 1 step, {SECONDS} s", "dit", build_dit, run_dit))
    out.append((f"VAE decode {SECONDS} s, {args.vae_chunk}-frame windows", "vae", build_vae,
                make_vae_stage(args.vae_chunk)))
    if not args.skip_untiled_vae:
        out.append((f"VAE decode {SECONDS} s, one window", "vae", build_vae, make_vae_stage(None)))
    return out


# ----------------------------------------------------------------------------------------------
# CPU: measured RSS, one component alive at a time
# ----------------------------------------------------------------------------------------------


def bench_cpu(args, dtype) -> list[StageResult]:
    results = []
    torch.set_num_threads(args.threads)
    for stage, component, build, run in stages(args):
        free_memory()
        before_build = rss()
        model = build(dtype)
        free_memory()
        weights = weight_bytes(model)
        reset_peak_rss()
        before = rss()
        start = time.perf_counter()
        with torch.inference_mode():
            run(model, "cpu", dtype)
        seconds = time.perf_counter() - start
        peak = peak_rss()
        results.append(StageResult(stage, component, weights / GB, peak / GB, (peak - before) / GB, seconds))
        print(f"  {stage:<55} weights {weights / GB:6.2f} GB  RSS +{(before - before_build) / GB:5.2f} GB  "
              f"peak RSS {peak / GB:6.2f} GB  extra {(peak - before) / GB:5.2f} GB  {seconds:6.1f} s", flush=True)
        del model
        free_memory()
    return results


def derive_device_peaks(results: list[StageResult], lm_size: str) -> dict[str, dict[str, float]]:
    """Peak device memory per stage under each offload mode, from the measured weights and extras."""
    weights = {}
    for r in results:
        weights.setdefault(r.component, r.weights_gb)
    resident = [c for c in weights if not c.startswith("lm_") or c == f"lm_{lm_size}"]
    modes = {}
    for mode in ("none", "cpu", "cpu+dit"):
        per_stage = {}
        for r in results:
            if r.component.startswith("lm_") and r.component != f"lm_{lm_size}":
                continue
            if mode == "none":
                held = sum(weights[c] for c in resident)
            else:
                held = weights[r.component]
                if mode == "cpu" and r.component != "dit":
                    held += weights["dit"]  # the DiT stays on the device
            per_stage[r.stage] = round(held + r.extra_gb, 2)
        modes[mode] = per_stage
    return modes


# ----------------------------------------------------------------------------------------------
# GPU: measured max_memory_allocated through OffloadManager
# ----------------------------------------------------------------------------------------------


def bench_gpu(args, dtype) -> dict[str, list[StageResult]]:
    device = torch.device(args.device)
    built = {}
    plan = stages(args)
    for _, component, build, _ in plan:
        if component not in built:
            built[component] = build(dtype)
    results = {}
    for mode, (offload, offload_dit) in {"none": (False, False), "cpu": (True, False),
                                        "cpu+dit": (True, True)}.items():
        manager = OffloadManager(device, offload_to_cpu=offload, offload_dit_to_cpu=offload_dit)
        names = {c: ("dit" if c == "dit" else "lm" if c.startswith("lm_") else c) for c in built}
        for component, module in built.items():
            if component.startswith("lm_") and component != f"lm_{args.lms[-1]}":
                module.to("cpu")  # only one LM is part of a pipeline
            else:
                manager.place(names[component], module)
        torch.cuda.synchronize()
        rows = []
        for stage, component, _, run in plan:
            module = built[component]
            extra_lm = component.startswith("lm_") and component != f"lm_{args.lms[-1]}"
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            start = time.perf_counter()
            if extra_lm:  # the other LM size: measured alone, like a pipeline that loaded it instead
                module.to(device)
                with torch.inference_mode():
                    run(module, device, dtype)
                module.to("cpu")
            else:
                with manager.use(names[component], module), torch.inference_mode():
                    run(module, device, dtype)
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
            rows.append(StageResult(stage, component, weight_bytes(module) / GB, peak / GB,
                                    (peak - before) / GB, time.perf_counter() - start))
            print(f"  [{mode:<7}] {stage:<55} peak {peak / GB:6.2f} GB  {rows[-1].seconds:6.1f} s", flush=True)
        results[mode] = rows
        for module in built.values():
            module.to("cpu")
        torch.cuda.empty_cache()
    return results


# ----------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None,
                        help="default: float32 on CPU, bfloat16 on GPU (the policy's choice)")
    parser.add_argument("--lms", nargs="*", default=["0.6B", "1.7B"], choices=list(LM_CONFIGS),
                        help="LM sizes to measure; the last one is the pipeline's LM in the offload table")
    parser.add_argument("--vae-chunk", type=int, default=256, help="VAE decode window (CPU policy: 256)")
    parser.add_argument("--skip-untiled-vae", action="store_true", help="skip the one-window VAE decode")
    parser.add_argument("--threads", type=int, default=max(1, os.cpu_count() or 1))
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    dtype = getattr(torch, args.dtype or ("float32" if args.device == "cpu" else "bfloat16"))
    torch.manual_seed(0)

    print(f"bench/memory: device {args.device}, {dtype}, torch {torch.__version__}, {SECONDS} s song", flush=True)
    report: dict = {"device": args.device, "dtype": str(dtype), "seconds": SECONDS}
    if args.device == "cpu":
        results = bench_cpu(args, dtype)
        report["stages"] = [asdict(r) for r in results]
        lm = args.lms[-1] if args.lms else ""
        report["device_peak_gb"] = derive_device_peaks(results, lm)
        print(f"\nPeak device memory per stage (GB), derived from the measured figures (pipeline LM {lm}):")
        print(f"  {'stage':<55} {'no offload':>11} {'CPU':>8} {'CPU+DiT':>8}")
        for stage in report["device_peak_gb"]["none"]:
            row = [report["device_peak_gb"][m][stage] for m in ("none", "cpu", "cpu+dit")]
            print(f"  {stage:<55} {row[0]:>11.2f} {row[1]:>8.2f} {row[2]:>8.2f}")
        for mode in ("none", "cpu", "cpu+dit"):  # the pipeline decodes in windows; the one-window row is for comparison
            peak = max(v for k, v in report["device_peak_gb"][mode].items() if "one window" not in k)
            print(f"  {'peak over the pipeline, windowed VAE (' + mode + ')':<55} {peak:>8.2f}")
    else:
        by_mode = bench_gpu(args, dtype)
        report["stages_by_offload"] = {m: [asdict(r) for r in rows] for m, rows in by_mode.items()}
        print("\nmax_memory_allocated per stage (GB):")
        print(f"  {'stage':<55} {'no offload':>11} {'CPU':>8} {'CPU+DiT':>8}")
        for i, row in enumerate(by_mode["none"]):
            vals = [by_mode[m][i].peak_gb for m in ("none", "cpu", "cpu+dit")]
            print(f"  {row.stage:<55} {vals[0]:>11.2f} {vals[1]:>8.2f} {vals[2]:>8.2f}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
