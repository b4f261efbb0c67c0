"""float32 against the fast path (bfloat16), stage by stage, in one run on one machine.

Real ACE-Step 1.5 sizes with random weights (2B DiT and its condition encoder, the Oobleck VAE, the
0.6B text encoder and the 0.6B 5 Hz LM), the workloads of the speed table in docs/readme/performance.md:

- condition encoder: caption 64 + lyrics 256 tokens, timbre reference 750 frames (30 s)
- text encoder: the 64-token caption through Qwen3-Embedding-0.6B
- DiT step (turbo, no CFG) at 30 s and 60 s of audio, with the condition's projections cached across
  steps as the engine's sampler runs them (`acestep_core/dit_speed.py`)
- VAE decode of 10 s of audio (one tile, as the engine decodes it on the CPU)
- LM 0.6B, 150 audio codes, constrained, without CFG and with CFG 2.0 (wall time, prefill included)
- peak memory of the DiT (weights + one 60 s step): CPU peak RSS / CUDA max_memory_allocated

Each figure is printed with the 1-minute load average beside it (the machine may be shared; on a
loaded machine every figure is slower, the ratios less so). The fast dtype is what `--dtype auto`
picks on this machine unless `--fast-dtype` says otherwise.

    python bench/bench_speed.py                   # full run on the CPU
    python bench/bench_speed.py --quick           # 2 layers per model, short inputs: checks the script
    python bench/bench_speed.py --device cuda     # the same on a GPU (synchronised timings, bfloat16)
    python bench/bench_speed.py --stages lm --lm-context 1000   # LM steps over a long cache (a long song's end)
    python bench/bench_speed.py --device cuda --compile   # the fast path's DiT and VAE decoder under torch.compile
    python bench/bench_speed.py --stages vae --vae-seconds 30 --vae-windows 384 512 0   # tiles against one pass
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_dit import randomize  # noqa: E402  (random real-size weights without a slow init)
from bench_lm import TOKENIZER, random_model  # noqa: E402
from memory import free_memory, peak_rss, reset_peak_rss, rss  # noqa: E402

from acestep_core.dit import PUBLISHED_DIT_DEFAULTS, _build_modules  # noqa: E402
from acestep_core.dit_speed import cross_kv_cached  # noqa: E402
from acestep_core.vae import PUBLISHED_VAE_CONFIG, prepare_for_inference, vae_decode  # noqa: E402
from acestep_core.vae_compile import compile_decoder  # noqa: E402

GB = 1024**3


def load() -> str:
    return f"{os.getloadavg()[0]:.2f}"


class Timer:
    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __call__(self, fn, repeats: int = 1) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        if self.cuda:
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / repeats


def dit_config(layers: int | None) -> dict:
    """The published 2B turbo config, with `layers` layers per transformer when given."""
    config = dict(PUBLISHED_DIT_DEFAULTS, layer_types=["sliding_attention", "full_attention"] * 12)
    if layers:
        config.update(num_hidden_layers=layers, layer_types=config["layer_types"][:layers],
                      num_lyric_encoder_hidden_layers=min(layers, 8), num_timbre_encoder_hidden_layers=min(layers, 4))
    return config


def text_encoder_config(layers: int | None):
    """Qwen3-Embedding-0.6B, with `layers` layers when given."""
    from transformers import Qwen3Config

    return Qwen3Config(vocab_size=151669, hidden_size=1024, intermediate_size=3072,
                       num_hidden_layers=layers or 28, num_attention_heads=16, num_key_value_heads=8,
                       head_dim=128, max_position_embeddings=32768, rope_theta=1_000_000.0, tie_word_embeddings=True)


def dit_modules(dtype, device, layers: int | None):
    modules = _build_modules(dit_config(layers))
    return (randomize(modules["condition_encoder"], device, dtype), randomize(modules["transformer"], device, dtype))


def available_ram() -> int:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 1 << 62


def layers_that_fit() -> int:
    """0 (all 24) when the float32 2B DiT, the condition encoder and a 60 s step fit in free RAM with
    2 GB to spare; else the most layers that do (real width), said in the output."""
    with torch.device("meta"):
        transformer = _build_modules(dict(PUBLISHED_DIT_DEFAULTS,
                                          layer_types=["sliding_attention", "full_attention"] * 12))["transformer"]
    per_layer = sum(p.numel() for p in transformer.layers[0].parameters()) * 4
    rest = sum(p.numel() for p in transformer.parameters()) * 4 - 24 * per_layer
    budget = available_ram() - 2 * GB - rest - 1 * GB  # 1 GB: the encoder and the activations
    fit = max(2, min(24, int(budget // per_layer)) // 2 * 2)
    if fit < 24:
        print(f"note: {available_ram() / GB:.1f} GB free RAM holds {fit} of the 24 DiT layers in float32: "
              f"the DiT rows below use {fit} layers at the real width")
        return fit
    return 0


def bench_condition(dtype, device, args, timer):
    encoder, transformer = dit_modules(dtype, device, args.layers)
    del transformer
    text, lyrics, timbre = (64, 256, 750) if not args.quick else (16, 32, 75)
    kw = dict(
        text_hidden_states=torch.randn(1, text, 1024, device=device, dtype=dtype),
        text_attention_mask=torch.ones(1, text, device=device, dtype=torch.long),
        lyric_hidden_states=torch.randn(1, lyrics, 1024, device=device, dtype=dtype),
        lyric_attention_mask=torch.ones(1, lyrics, device=device, dtype=torch.long),
        refer_audio_acoustic_hidden_states_packed=torch.randn(1, timbre, 64, device=device, dtype=dtype),
        refer_audio_order_mask=torch.zeros(1, device=device, dtype=torch.long),
    )
    with torch.inference_mode():
        encoder(**kw)
        seconds = timer(lambda: encoder(**kw), args.repeats)
    return [(f"condition encoder (caption {text} + lyrics {lyrics} tokens, timbre {timbre} frames)", seconds, "s")]


def bench_text_encoder(dtype, device, args, timer):
    from transformers import Qwen3Model

    with torch.device("meta"):
        model = Qwen3Model(text_encoder_config(args.layers))
    model = randomize(model, device, dtype)
    ids = torch.randint(0, 151643, (1, 64), device=device)
    with torch.inference_mode():
        model(input_ids=ids)
        seconds = timer(lambda: model(input_ids=ids), args.repeats)
    return [("text encoder (caption 64 tokens)", seconds, "s")]


def bench_dit(dtype, device, args, timer):
    encoder, transformer = dit_modules(dtype, device, args.layers)
    del encoder
    free_memory()
    run, cache = transformer, cross_kv_cached
    if args.compile and dtype != torch.float32:
        # compiled whole; the condition cache's identity checks would only break the graph
        run, cache = torch.compile(transformer, dynamic=False), lambda _module: contextlib.nullcontext()
    rows = []
    for seconds_audio in args.dit_seconds:
        frames = int(seconds_audio * 25)
        base = rss()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        else:
            reset_peak_rss()
        kw = dict(hidden_states=torch.randn(1, frames, 64, device=device, dtype=dtype),
                  timestep=torch.full((1,), 0.5, device=device, dtype=dtype),
                  timestep_r=torch.full((1,), 0.5, device=device, dtype=dtype),
                  encoder_hidden_states=torch.randn(1, 330, 2048, device=device, dtype=dtype),
                  context_latents=torch.randn(1, frames, 128, device=device, dtype=dtype))
        with torch.inference_mode(), cache(transformer):
            run(**kw)  # warm-up (and the compile, with --compile); fills the condition cache
            step = timer(lambda: run(**kw), args.repeats)
        rows.append((f"DiT step, {seconds_audio:g} s of audio", step, "s"))
        if seconds_audio == max(args.dit_seconds):
            if device.type == "cuda":
                peak = torch.cuda.max_memory_allocated()
            else:
                weights = sum(p.numel() * p.element_size() for p in transformer.parameters())
                peak = peak_rss() - base + weights  # weights were resident before the reset
            rows.append((f"peak memory, DiT (weights + one {seconds_audio:g} s step)", peak / GB, "GB"))
    return rows


def bench_vae(dtype, device, args, timer):
    from diffusers import AutoencoderOobleck

    with torch.device("meta"):
        vae = AutoencoderOobleck(**PUBLISHED_VAE_CONFIG)
    vae = randomize(vae, device, dtype)
    prepare_for_inference(vae, dtype)  # as load_vae does
    rows = []
    frames = int(args.vae_seconds * 25)
    latents = torch.randn(1, frames, 64) * 0.5
    if args.compile and dtype != torch.float32:  # what ACESTEP_VAE_COMPILE=1 does in load_vae
        compile_decoder(vae)
        rows.append(("VAE first decode of 8 frames (the compile)", timer(lambda: vae_decode(vae, latents[:, :8])), "s"))
    vae_decode(vae, latents[:, :8])
    if not args.vae_windows:
        seconds = timer(lambda: vae_decode(vae, latents), args.repeats)
        return rows + [(f"VAE decode, {args.vae_seconds:g} s of audio", seconds, "s")]
    for window in args.vae_windows:  # 0: one pass, what the CPU window gives a song that fits
        chunk = window or frames
        vae_decode(vae, latents, chunk_frames=chunk)  # first decode at these shapes: oneDNN's set-up
        seconds = timer(lambda: vae_decode(vae, latents, chunk_frames=chunk), args.repeats)
        label = "one pass" if chunk >= frames else f"{chunk}-frame tiles"
        rows.append((f"VAE decode, {args.vae_seconds:g} s of audio, {label}", seconds, "s"))
    return rows


def bench_lm(dtype, device, args, timer):
    from acestep_core.lm import LMSampling
    from acestep_core.lm.decoder import StaticCacheDecoder
    from acestep_core.lm.generation import decode_codes
    from acestep_core.lm.tokenizer import LMTokenizer

    import bench_lm

    model = random_model("0.6B", str(device), args.layers).to(dtype)
    decoder = StaticCacheDecoder(model)
    rows = bench_lm.cfg_prompt_pair(LMTokenizer(TOKENIZER), args.lm_context)
    context = f", {len(rows[0])}-token prompt" if args.lm_context else ""
    out = []
    for cfg in (1.0, 2.0):
        sampling = LMSampling(temperature=0.85, cfg_scale=cfg, top_p=0.9)
        batch = rows if cfg > 1 else rows[:1]

        def run(n=args.codes):
            result = decode_codes(decoder, batch, n, sampling, torch.Generator(device=device).manual_seed(1), cfg)
            assert len(result.generated_ids) == n + 1

        run(3)  # warm-up
        seconds = timer(run)
        label = "no CFG" if cfg == 1 else "CFG 2.0"
        out.append((f"LM 0.6B, {args.codes} codes, {label}, constrained{context} (wall)", seconds, "s"))
        out.append((f"LM 0.6B, {label}{context}: codes per second", args.codes / seconds, "tok/s"))
    return out


STAGES = {"condition": bench_condition, "text_encoder": bench_text_encoder, "dit": bench_dit,
          "vae": bench_vae, "lm": bench_lm}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    parser.add_argument("--fast-dtype", default="auto", choices=["auto", "bfloat16", "float16"],
                        help="the fast path's dtype (auto: what --dtype auto picks here)")
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=list(STAGES))
    parser.add_argument("--dit-seconds", type=float, nargs="+", default=[30.0, 60.0])
    parser.add_argument("--vae-seconds", type=float, default=10.0)
    parser.add_argument("--vae-windows", type=int, nargs="+", default=[], metavar="FRAMES",
                        help="time the VAE decode in tiles of these many latent frames each (0: one pass)")
    parser.add_argument("--codes", type=int, default=150)
    parser.add_argument("--lm-context", type=int, default=0,
                        help="LM prompt of at least this many tokens (1000: the late steps of a long song; 0: the short one)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--layers", type=int, default=0, help="layers per transformer (0: the real count)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the fast path's DiT and VAE decoder (GPU; on a CPU the VAE gains, the DiT not)")
    parser.add_argument("--quick", action="store_true", help="2 layers, 2 s / 1 s of audio, 10 codes: checks the script")
    args = parser.parse_args(argv)
    if args.quick:
        args.layers, args.dit_seconds, args.vae_seconds, args.codes = 2, [1.0, 2.0], 1.0, 10
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    from acestep_core.memory.dtypes import resolve_dtype

    fast = resolve_dtype(args.fast_dtype, device)
    if fast == torch.float32:
        print(f"note: --dtype auto picks float32 on this {device.type} (no native bf16); timing bfloat16 anyway")
        fast = torch.bfloat16
    timer = Timer(device)
    from acestep_core.memory.dtypes import auto_dtypes, device_bf16_supported

    print(f"auto here: {auto_dtypes(device.type, device_bf16_supported(device))[2]}")
    if device.type == "cpu" and not args.layers:
        args.layers = layers_that_fit()
    print(f"device={device} threads={torch.get_num_threads()} cpus={os.cpu_count()} fast={fast} "
          f"torch={torch.__version__} quick={args.quick} layers={args.layers or 'real'}", flush=True)
    print(f"{'stage':<72} {'float32':>10} {'load':>5} {str(fast).split('.')[-1]:>10} {'load':>5} {'fast/fp32':>9}")
    table = []
    for name in args.stages:
        results = {}
        for dtype in (torch.float32, fast):
            free_memory()
            before = load()
            rows = STAGES[name](dtype, device, args, timer)
            results[dtype] = (rows, f"{before}")
            free_memory()
        reference = {label: value for label, value, _ in results[torch.float32][0]}
        for label, got, unit in results[fast][0]:  # a fast-only row (the --compile time) has no ratio
            ref = reference.get(label)
            ref_text, ratio = (f"{ref:9.2f}{unit[0]}", f"{got / ref:9.2f}") if ref else (f"{'-':>10}", f"{'-':>9}")
            print(f"{label:<72} {ref_text} {results[torch.float32][1]:>5} {got:9.2f}{unit[0]} "
                  f"{results[fast][1]:>5} {ratio}  ({unit})", flush=True)
            table.append((label, ref, results[torch.float32][1], got, results[fast][1], unit))
    print(f"\n| stage | float32 | load | {str(fast).split('.')[-1]} | load | fast / float32 |")
    print("|---|---|---|---|---|---|")
    for label, ref, lr, got, lg, unit in table:
        ref_text, ratio = (f"{ref:.2f} {unit}", f"{got / ref:.2f}") if ref else ("-", "-")
        print(f"| {label} | {ref_text} | {lr} | {got:.2f} {unit} | {lg} | {ratio} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
