"""Decode tokens/s of the 5 Hz LM codes phase at batch 1 with CFG and constraints, ours vs plain.

Ours: `decode_codes` (static KV cache, cond + uncond rows in one batch-2 forward, code-only head,
on-device sampling). Plain: transformers `generate` on the same model object (same random weights)
with `guidance_scale` + `negative_prompt_ids` (its CFG processor runs the unconditional row as a
second forward with its own cache) and a logits processor applying the same constraint (audio
codes only, EOS blocked until the target count, then forced). Same prompts, same number of new
tokens, same sampling (temperature 0.85, top-p 0.9, CFG 2.0), float32, warm-up first.

Decode speed is timed per token inside one run: the time between the first and the last sampled
token (ours: the progress callback; plain: the constraint processor, called once per token), so
the prefill is left out of both. Before each timed section the script waits (up to --max-wait s)
for the 1-minute load average to drop below --max-load and prints it beside each figure: the
machine is shared, and on 2 cores another busy process halves any figure.

A greedy check decodes a few tokens with both and prints how many agree (the two compute the
same CFG: transformers normalises with log-softmax first, which shifts every logit of a row by
the same constant).

Usage: python bench/bench_lm.py [--sizes 0.6B 1.7B] [--tokens 24] [--threads N] [--compile]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from acestep_core.lm import LMSampling, prompts
from acestep_core.lm.constants import AUDIO_CODE_BASE, IM_END_ID, NUM_VALID_CODES
from acestep_core.lm.decoder import StaticCacheDecoder
from acestep_core.lm.generation import decode_codes
from acestep_core.lm.tokenizer import LMTokenizer

CONFIGS = {
    "0.6B": dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
                 num_key_value_heads=8, max_position_embeddings=32768),
    "1.7B": dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
                 num_key_value_heads=8, max_position_embeddings=40960),
}
# The real Qwen BPE with the audio-code tokens (the tiny LM fixture's tokenizer); the weights are made here.
TOKENIZER = Path(__file__).resolve().parents[1] / "tests/fixtures/acestep-tiny/acestep-5Hz-lm-tiny"


def cfg_prompt_pair(tok: LMTokenizer, min_tokens: int = 0) -> list[list[int]]:
    """Token ids of the codes-phase CFG pair (cond, uncond) every LM bench decodes: 30 s, all metas.

    `min_tokens`: lengthen the lyrics with verses until the cond prompt has at least that many tokens,
    so the steps attend over a long cache (the late steps of a long song)."""
    caption, lyrics = "upbeat electronic dance track with punchy drums", "[Verse]\nla la la\n[Chorus]\noh oh"
    cot = prompts.format_metadata_as_cot({"bpm": 120, "caption": caption, "duration": 30, "keyscale": "C major",
                                          "language": "en", "timesignature": "4"})
    while True:
        cond = tok.encode(prompts.codes_prompt(caption, lyrics, cot))
        if len(cond) >= min_tokens:
            return [cond, tok.encode(prompts.codes_uncond_prompt(caption, lyrics))]
        lyrics += "\n[Verse]\nla la la dancing in the night we are shining bright"


def random_model(size: str, device: str, layers: int = 0):
    """Random weights at the real `size` (`layers`: fewer layers, for a quick check)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM
    from transformers.models.qwen3.modeling_qwen3 import Qwen3RotaryEmbedding

    sizes = dict(CONFIGS[size], **({"num_hidden_layers": layers} if layers else {}))
    cfg = Qwen3Config(vocab_size=217204, head_dim=128, rope_theta=1e6, rms_norm_eps=1e-6,
                      tie_word_embeddings=True, eos_token_id=IM_END_ID, **sizes)
    with torch.device("meta"):
        model = Qwen3ForCausalLM(cfg)
    model.to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=gen)
        model.model.rotary_emb = Qwen3RotaryEmbedding(cfg).to(device)
    model.lm_head.weight = model.model.embed_tokens.weight
    return model.float().eval()


class CodesOnly(LogitsProcessor):
    """Audio codes only; EOS blocked until `target` codes, then forced. Records when it is called."""

    def __init__(self, prompt_len: int, target: int):
        self.prompt_len, self.target = prompt_len, target
        self.stamps: list[float] = []

    def __call__(self, input_ids, scores):
        self.stamps.append(time.perf_counter())
        count = input_ids.shape[1] - self.prompt_len
        if count >= self.target:
            keep = scores[:, IM_END_ID].clone()
            scores.fill_(float("-inf"))
            scores[:, IM_END_ID] = keep
            return scores
        scores[:, :AUDIO_CODE_BASE] = float("-inf")
        scores[:, AUDIO_CODE_BASE + NUM_VALID_CODES:] = float("-inf")
        return scores


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def wait_for_quiet(max_load: float, max_wait: float) -> float:
    """Waits until the 1-minute load average is below `max_load` (or `max_wait` s pass)."""
    deadline = time.monotonic() + max_wait
    while os.getloadavg()[0] >= max_load and time.monotonic() < deadline:
        time.sleep(5)
    return os.getloadavg()[0]


def rate(stamps: list[float]) -> float:
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def run_ours(decoder, rows, tokens, sampling, device, seed=1):
    stamps: list[float] = []

    def progress(done, total):
        if done <= tokens:  # one stamp per sampled code (the final EOS is written, not decoded)
            sync(device)
            stamps.append(time.perf_counter())

    gen = torch.Generator(device=device).manual_seed(seed)
    result = decode_codes(decoder, rows, tokens, sampling, gen, sampling.cfg_scale, progress=progress)
    assert len(result.generated_ids) == tokens + 1 and result.generated_ids[-1] == IM_END_ID
    return rate(stamps), result.generated_ids[:-1]


def run_plain(model, rows, tokens, sampling, device, seed=1):
    cond = torch.tensor([rows[0]], device=device)
    uncond = torch.tensor([rows[1]], device=device)
    constraint = CodesOnly(cond.shape[1], tokens)
    greedy = sampling.temperature == 0
    torch.manual_seed(seed)
    with torch.inference_mode():
        out = model.generate(
            input_ids=cond, attention_mask=torch.ones_like(cond), negative_prompt_ids=uncond,
            negative_prompt_attention_mask=torch.ones_like(uncond), guidance_scale=sampling.cfg_scale,
            logits_processor=LogitsProcessorList([constraint]), max_new_tokens=tokens + 1,
            min_new_tokens=tokens + 1, do_sample=not greedy,
            **({} if greedy else dict(temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)),
            eos_token_id=None, pad_token_id=IM_END_ID,
        )
    generated = out[0, cond.shape[1]:].tolist()
    assert len(generated) == tokens + 1 and generated[-1] == IM_END_ID
    return rate(constraint.stamps[:tokens]), generated[:-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["0.6B", "1.7B"], choices=sorted(CONFIGS))
    parser.add_argument("--tokens", type=int, default=24, help="new tokens per timed run")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the decode step (CUDA)")
    parser.add_argument("--max-load", type=float, default=1.5)
    parser.add_argument("--max-wait", type=float, default=180.0, help="seconds to wait for a quiet machine")
    parser.add_argument("--check-tokens", type=int, default=6, help="greedy tokens compared (0: skip)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tok = LMTokenizer(TOKENIZER)
    rows = cfg_prompt_pair(tok)
    sampling = LMSampling(temperature=0.85, cfg_scale=2.0, top_p=0.9)
    greedy = LMSampling(temperature=0.0, cfg_scale=2.0, top_p=1.0)
    print(f"device={args.device} threads={torch.get_num_threads()} cpus={os.cpu_count()} dtype=float32 batch=1 "
          f"cfg=2.0 temperature=0.85 top-p=0.9, constrained codes, {args.tokens} new tokens, "
          f"prompts {len(rows[0])}/{len(rows[1])} tokens, compile={args.compile}", flush=True)
    table = []
    for size in args.sizes:
        model = random_model(size, args.device)
        decoder = StaticCacheDecoder(model, compile=args.compile)
        run_ours(decoder, rows, 3, sampling, args.device)  # warm-up (and compile)
        run_plain(model, rows, 3, sampling, args.device)
        if args.check_tokens:
            _, a = run_ours(decoder, rows, args.check_tokens, greedy, args.device)
            _, b = run_plain(model, rows, args.check_tokens, greedy, args.device)
            agree = sum(x == y for x, y in zip(a, b))
            print(f"{size}: greedy check, {agree}/{len(a)} tokens agree", flush=True)
        load_ours = wait_for_quiet(args.max_load, args.max_wait)
        ours, _ = run_ours(decoder, rows, args.tokens, sampling, args.device)
        load_ours_end = os.getloadavg()[0]
        load_plain = wait_for_quiet(args.max_load, args.max_wait)
        plain, _ = run_plain(model, rows, args.tokens, sampling, args.device)
        load_plain_end = os.getloadavg()[0]
        table.append((size, ours, f"{load_ours:.2f}->{load_ours_end:.2f}", plain,
                      f"{load_plain:.2f}->{load_plain_end:.2f}"))
        print(f"{size}: ours {ours:.2f} tok/s (load {table[-1][2]}) | plain generate {plain:.2f} tok/s "
              f"(load {table[-1][4]}) | {ours / plain:.2f}x", flush=True)
        del decoder, model
    print("\n| LM | ours tok/s | load | plain generate tok/s | load | speed-up |")
    print("|---|---|---|---|---|---|")
    for size, ours, lo, plain, lp in table:
        print(f"| {size} | {ours:.2f} | {lo} | {plain:.2f} | {lp} | {ours / plain:.2f}x |")


if __name__ == "__main__":
    main()
