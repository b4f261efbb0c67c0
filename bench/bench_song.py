"""One song end to end through the engine, on random weights at the real sizes.

The 5 Hz LM thinks (metadata chain of thought, then every audio code of the song with CFG 2.0,
constrained), the 2B turbo DiT denoises in 8 steps, the Oobleck VAE decodes: `planning.plan_request`
then `ACEStepPipeline.generate`, the calls every door makes. The models are built from random tensors
in the checkpoint layout by the engine's own loaders (`build_dit`, `load_vae(state_dict=...)`,
`build_qwen3_model`), so only the reading of files is left out. Prints each stage's seconds, the LM's
codes per second and, on CUDA, each stage's `max_memory_allocated`.

    python bench/bench_song.py --device cuda                 # 240 s, 1.7B LM, bfloat16
    python bench/bench_song.py --device cuda --compile       # + the LM step, the DiT and the VAE under torch.compile
    python bench/bench_song.py --seconds 60 --lm 0.6B        # on a CPU (dtype: what `auto` picks)
    python bench/bench_song.py --quick                       # 2 layers per model, 10 s: checks the script
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_lm import CONFIGS, TOKENIZER, random_model  # noqa: E402
from bench_speed import dit_config, text_encoder_config  # noqa: E402

from acestep_core.dit import _build_modules, build_dit, diffusers_to_official_key  # noqa: E402
from acestep_core.lm.planner import LMPlanner  # noqa: E402
from acestep_core.lm.tokenizer import LMTokenizer  # noqa: E402
from acestep_core.memory.dtypes import resolve_dtype  # noqa: E402
from acestep_core.memory.policy import detect_device_memory, vae_chunk_frames_for  # noqa: E402
from acestep_core.pipeline import ACEStepPipeline  # noqa: E402
from acestep_core.planning import PlanOptions, plan_request  # noqa: E402
from acestep_core.request import GenerationRequest  # noqa: E402
from acestep_core.silence import builtin_silence_latent  # noqa: E402
from acestep_core.text_encoder import _make, build_qwen3_model, load_tokenizer  # noqa: E402
from acestep_core.vae import PUBLISHED_VAE_CONFIG, load_vae  # noqa: E402

TEXT_TOKENIZER = TOKENIZER.parent / "Qwen3-Embedding-tiny"
CAPTION = "upbeat electronic dance track with punchy drums and a bright synth lead"
LYRICS = "[Verse]\nneon lights are calling\nwe keep on moving\n[Chorus]\noh oh, all night long\n" * 4


def random_like(shapes: dict[str, torch.Size], device, dtype, gen) -> dict[str, torch.Tensor]:
    """Random tensors for a state dict: norms near 1, the rest small (a random model stays finite)."""
    out = {}
    for key, shape in shapes.items():
        t = torch.empty(shape, device=device, dtype=torch.float32)
        if "norm" in key and key.endswith("weight") or key.endswith("weight_g"):
            t.fill_(1.0)
        else:
            t.normal_(0.0, 0.02, generator=gen)
        out[key] = t.to(dtype)
    return out


def build_models(args, device, dtype):
    # The VAE tile the memory decision gives this machine, from the memory free before loading, as
    # `load_engine` decides it.
    memory = detect_device_memory(device)
    vae_chunk = vae_chunk_frames_for(memory.device_type, memory.free_bytes, memory.total_bytes)
    gen = torch.Generator(device=device).manual_seed(0)
    layers = 2 if args.quick else 0
    config = dict(dit_config(layers), is_turbo=True, model_version="turbo")
    shapes = {}
    for component, module in _build_modules(config).items():
        shapes.update({diffusers_to_official_key(component, k): v.shape for k, v in module.state_dict().items()
                       if k != "silence_latent"})
    dit = build_dit(random_like(shapes, device, dtype, gen), config, builtin_silence_latent(), "random 2B turbo",
                    dtype=dtype)

    from diffusers import AutoencoderOobleck
    with torch.device("meta"):
        vae_shapes = {k: v.shape for k, v in AutoencoderOobleck(**PUBLISHED_VAE_CONFIG).state_dict().items()}
    vae = load_vae(None, device=device, dtype=dtype, state_dict=random_like(vae_shapes, device, dtype, gen))

    from transformers import Qwen3Model
    te_config = text_encoder_config(layers)
    with torch.device("meta"):
        te_shapes = {k: v.shape for k, v in Qwen3Model(te_config).state_dict().items()}
    text_encoder = _make(build_qwen3_model(te_config, random_like(te_shapes, device, dtype, gen), "random", dtype),
                         load_tokenizer(TEXT_TOKENIZER), "random 0.6B text encoder")
    text_encoder.model.to(device)

    lm_dtype = resolve_dtype("auto", device, lm=True) if args.dtype == "auto" else dtype
    lm = LMPlanner(random_model(args.lm, str(device), layers).to(lm_dtype), LMTokenizer(TOKENIZER))
    if args.compile and device.type == "cuda":
        dit.transformer.compile()
    # not fixed: on the CPU the window grows at decode time to what the RAM holds, as the engine's does
    return ACEStepPipeline(dit, vae, text_encoder, device=device, dtype=dtype, vae_chunk_frames=vae_chunk,
                           vae_chunk_fixed=False), lm


class StagePeaks:
    """`max_memory_allocated` per stage on CUDA (reset at each stage's start)."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"
        self.peaks: dict[str, float] = {}

    def start(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def end(self, stage: str) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            self.peaks[stage] = torch.cuda.max_memory_allocated() / 1024**3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"])
    parser.add_argument("--seconds", type=float, default=240.0)
    parser.add_argument("--lm", default="1.7B", choices=sorted(CONFIGS))
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the VAE decoder, and on CUDA the LM step and the DiT")
    parser.add_argument("--quick", action="store_true", help="2 layers per model, 10 s: checks the script")
    args = parser.parse_args()
    if args.quick:
        args.seconds = min(args.seconds, 10.0)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.compile:
        os.environ["ACESTEP_VAE_COMPILE"] = "1"
        if device.type == "cuda":  # on a CPU the LM step's compile does not finish in reasonable time
            os.environ["ACESTEP_LM_COMPILE"] = "1"
    dtype = resolve_dtype(args.dtype, device)
    peaks = StagePeaks(device)

    t0 = time.perf_counter()
    pipeline, lm = build_models(args, device, dtype)
    print(f"device={device} dtype={dtype} lm={args.lm} ({lm.decoder.dtype}) song={args.seconds:g} s "
          f"threads={torch.get_num_threads()} compile={args.compile} quick={args.quick} "
          f"vae_tile={pipeline.vae_chunk_frames} frames{' or more (CPU: what RAM holds)' if device.type == 'cpu' else ''} "
          f"torch={torch.__version__}; models built in {time.perf_counter() - t0:.1f} s (random weights)")

    request = GenerationRequest(caption=CAPTION, lyrics=LYRICS, bpm=124, key_scale="A minor", time_signature="4",
                                vocal_language="en", audio_duration=args.seconds, inference_steps=8, seed=7)
    options = PlanOptions(thinking=True, lm_cfg_scale=2.0, use_cot_caption=False, use_cot_language=False, lm_seed=7)
    with torch.inference_mode():
        peaks.start()
        t0 = time.perf_counter()
        request, report = plan_request(request, options, planner=lambda: lm)
        lm_seconds = time.perf_counter() - t0
        peaks.end("LM")
        codes = len(report.think_plan.audio_codes) if report.think_plan else 0

        def after_step(step: int, total: int) -> None:  # the DiT's peak, then the decode's alone
            if step == total:
                peaks.end("DiT")
                peaks.start()

        peaks.start()
        result = pipeline.generate(request, progress=after_step)
        peaks.end("VAE")
    t = result.timings
    rows = [("LM think (metadata + codes, CFG 2.0, constrained)", lm_seconds, "s"),
            ("LM audio codes per second", codes / lm_seconds if lm_seconds else 0.0, "codes/s"),
            ("text + condition encoding", t.get("encode", 0.0), "s"),
            ("DiT, 8 turbo steps", t.get("denoise", 0.0), "s"),
            ("DiT seconds per step", t.get("denoise", 0.0) / 8, "s"),
            ("VAE decode", t.get("decode", 0.0), "s"),
            ("VAE seconds per minute of audio", t.get("decode", 0.0) * 60 / args.seconds, "s"),
            ("song end to end (LM + generate)", lm_seconds + t.get("total", 0.0), "s")]
    print(f"{codes} audio codes; audio {tuple(result.audio.shape)}, finite: {bool(torch.isfinite(result.audio).all())}")
    for label, value, unit in rows:
        print(f"{label:<52} {value:10.2f} {unit}")
    for stage, gb in peaks.peaks.items():
        print(f"{'max_memory_allocated, ' + stage:<52} {gb:10.2f} GB")


if __name__ == "__main__":
    main()
