"""Decode tokens/s of the 5 Hz LM codes phase at batch 1 with CFG and constraints.

Ours (static KV cache, cond + uncond in one forward, code-only head, on-device sampling) against a
plain transformers `generate` on the same weights: `guidance_scale` + `negative_prompt_ids` (the
unconditional row runs as a second forward) and a logits processor with the same constraint
(audio codes only, EOS blocked until the target count). Random weights in the real 0.6B / 1.7B
shapes; float32. Usage: python bench/bench_lm.py [--sizes 0.6B 1.7B] [--tokens 32] [--device cpu]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from acestep_core.lm import LMSampling, prompts
from acestep_core.lm.constants import AUDIO_CODE_BASE, IM_END_ID, NUM_VALID_CODES
from acestep_core.lm.generation import decode_codes
from acestep_core.lm.model import StaticCacheDecoder
from acestep_core.lm.tokenizer import LMTokenizer

CONFIGS = {
    "0.6B": dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
                 num_key_value_heads=8, max_position_embeddings=32768),
    "1.7B": dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
                 num_key_value_heads=8, max_position_embeddings=40960),
}
TOKENIZER = Path(__file__).resolve().parents[2] / "shared/fixtures/acestep-tiny/acestep-5Hz-lm-tiny"


def random_model(size: str, device: str):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    cfg = Qwen3Config(vocab_size=217204, head_dim=128, rope_theta=1e6, rms_norm_eps=1e-6,
                      tie_word_embeddings=True, eos_token_id=IM_END_ID, **CONFIGS[size])
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
        from transformers.models.qwen3.modeling_qwen3 import Qwen3RotaryEmbedding
        model.model.rotary_emb = Qwen3RotaryEmbedding(cfg).to(device)
    model.lm_head.weight = model.model.embed_tokens.weight
    return model.float().eval()


class CodesOnly(LogitsProcessor):
    """Audio codes only; EOS blocked until `target` codes, then forced (the reference's codes state)."""

    def __init__(self, prompt_len: int, target: int):
        self.prompt_len, self.target = prompt_len, target

    def __call__(self, input_ids, scores):
        count = input_ids.shape[1] - self.prompt_len
        eos = scores[:, IM_END_ID].clone()
        scores[:, :AUDIO_CODE_BASE] = float("-inf")
        scores[:, AUDIO_CODE_BASE + NUM_VALID_CODES:] = float("-inf")
        scores[:, IM_END_ID] = eos if count >= self.target else float("-inf")
        if count >= self.target:
            keep = scores[:, IM_END_ID].clone()
            scores.fill_(float("-inf"))
            scores[:, IM_END_ID] = keep
        return scores


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench_ours(model, rows, tokens, sampling, device):
    decoder = StaticCacheDecoder(model)
    gen = torch.Generator(device=device).manual_seed(1)
    decode_codes(decoder, rows, 2, sampling, gen, sampling.cfg_scale)  # warm-up
    sync(device)
    t0 = time.perf_counter()
    decode_codes(decoder, rows, 1, sampling, gen, sampling.cfg_scale)  # prefill only (+1 code)
    sync(device)
    t1 = time.perf_counter()
    result = decode_codes(decoder, rows, tokens + 1, sampling, gen, sampling.cfg_scale)
    sync(device)
    t2 = time.perf_counter()
    assert len(result.generated_ids) == tokens + 2 and result.generated_ids[-1] == IM_END_ID
    return tokens / ((t2 - t1) - (t1 - t0))


def bench_plain(model, rows, tokens, sampling, device):
    cond = torch.tensor([rows[0]], device=device)
    uncond = torch.tensor([rows[1]], device=device)

    def run(n):
        with torch.inference_mode():
            return model.generate(
                input_ids=cond, attention_mask=torch.ones_like(cond), negative_prompt_ids=uncond,
                negative_prompt_attention_mask=torch.ones_like(uncond), guidance_scale=sampling.cfg_scale,
                logits_processor=LogitsProcessorList([CodesOnly(cond.shape[1], n)]), max_new_tokens=n + 1,
                min_new_tokens=n + 1, do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p,
                top_k=0, eos_token_id=None, pad_token_id=IM_END_ID,
            )

    run(2)
    sync(device)
    t0 = time.perf_counter()
    run(1)
    sync(device)
    t1 = time.perf_counter()
    out = run(tokens + 1)
    sync(device)
    t2 = time.perf_counter()
    assert out.shape[1] - cond.shape[1] == tokens + 2
    return tokens / ((t2 - t1) - (t1 - t0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["0.6B", "1.7B"], choices=sorted(CONFIGS))
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tok = LMTokenizer(TOKENIZER)
    caption, lyrics = "upbeat electronic dance track with punchy drums", "[Verse]\nla la la\n[Chorus]\noh oh"
    cot = prompts.format_metadata_as_cot({"bpm": 120, "caption": caption, "duration": 30, "keyscale": "C major",
                                          "language": "en", "timesignature": "4"})
    rows = [tok.encode(prompts.codes_prompt(caption, lyrics, cot)), tok.encode(prompts.codes_uncond_prompt(caption, lyrics))]
    sampling = LMSampling(temperature=0.85, cfg_scale=2.0, top_p=0.9)
    print(f"device={args.device} threads={torch.get_num_threads()} dtype=float32 batch=1 cfg=2.0 "
          f"constrained codes, {args.tokens} tokens, prompts {len(rows[0])}/{len(rows[1])} tokens")
    for size in args.sizes:
        model = random_model(size, args.device)
        ours = bench_ours(model, rows, args.tokens, sampling, args.device)
        plain = bench_plain(model, rows, args.tokens, sampling, args.device)
        print(f"{size}: ours {ours:.2f} tok/s | plain transformers generate {plain:.2f} tok/s | "
              f"speed-up {ours / plain:.2f}x", flush=True)
        del model


if __name__ == "__main__":
    main()
