"""The per-token LM operations whose CPU form depends on the machine: top-p, attention, the packed weights.

- top-p: one sampled token (top-p 0.9, temperature 0.85) over the 64 000 codes and over the full
  217 204-token vocabulary, with torch's float sort and with the integer (radix) sort that
  `acestep_core.lm.sampling.sort_descending` uses on x86 CPUs; the sort alone beside it.
- attention: one query per row over a bfloat16 KV cache at the 0.6B LM's shapes (CFG batch 2, 16 query
  heads on 8 KV heads, head size 128), through SDPA with `enable_gqa` (what the decoder runs where the
  CPU has AMX) and with the query heads folded into their KV head (everywhere else), per layer.
- packed weights (a CPU with native bf16): one bfloat16 CFG step of the real-size 0.6B LM (random
  weights, code head included) on oneDNN-packed weights, with each layer's q/k/v and gate/up packed as
  one matrix each (what the decoder does) and with one packed matrix per weight, in alternating
  rounds in one process; `--no-step` leaves it out (it builds the 0.6B model: ~4 GB of RAM).

Usage: python bench/bench_lm_ops.py [--threads 1] [--keys 181 400 800 1300] [--no-step]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from acestep_core.lm import LMSampling, sampling
from acestep_core.lm.decoder import StaticCacheDecoder
from acestep_core.lm.generation import left_pad
from acestep_core.lm.packed_weights import PackedWeights
from acestep_core.lm.tokenizer import LMTokenizer
from acestep_core.memory.dtypes import cpu_has_amx, cpu_has_native_bf16

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_lm import TOKENIZER, cfg_prompt_pair, random_model  # noqa: E402


def per_call_ms(fn, repeats: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1e3


def bench_top_p(repeats: int) -> None:
    settings = LMSampling(temperature=0.85, top_p=0.9)
    generator = torch.Generator().manual_seed(0)
    sorts = {"float sort": lambda x: torch.sort(x, descending=True, dim=-1), "integer sort": sampling.sort_descending}
    integer_sort = sampling.sort_descending
    for size in (64000, 217204):
        # bfloat16 logits widened to float32, as the bfloat16 LM produces them (ties included)
        scores = (torch.randn(1, size, generator=torch.Generator().manual_seed(1)) * 3).bfloat16().float()
        for name, sort in sorts.items():
            sort_ms = per_call_ms(lambda: sort(scores), repeats)
            sampling.sort_descending = sort
            try:
                token_ms = per_call_ms(lambda: sampling.sample(scores, settings, generator), repeats)
            finally:
                sampling.sort_descending = integer_sort
            print(f"top-p over {size:>6} tokens, {name:<12}: sort {sort_ms:6.2f} ms, one sampled token {token_ms:6.2f} ms")


def bench_attention(keys: list[int], repeats: int) -> None:
    batch, heads, kv_heads, head_dim = 2, 16, 8, 128
    gen = torch.Generator().manual_seed(0)
    capacity = max(keys) + 256
    cache_k = torch.randn(batch, kv_heads, capacity, head_dim, generator=gen).bfloat16()
    cache_v = torch.randn(batch, kv_heads, capacity, head_dim, generator=gen).bfloat16()
    for length in keys:
        q = torch.randn(batch, heads, 1, head_dim, generator=gen).bfloat16()
        k, v = cache_k[:, :, :length], cache_v[:, :, :length]  # a slice of the cache, as the decoder reads it
        valid = torch.ones(batch, 1, 1, length, dtype=torch.bool)
        valid[1, ..., :20] = False  # the uncond row's left padding

        def gqa():
            return F.scaled_dot_product_attention(q, k, v, attn_mask=valid, enable_gqa=True)

        def folded():
            rows = q.reshape(batch, kv_heads, heads // kv_heads, head_dim).contiguous()
            return F.scaled_dot_product_attention(rows, k, v, attn_mask=valid).reshape(batch, heads, 1, head_dim)

        print(f"attention over {length:>5} keys (bfloat16, one layer): enable_gqa {per_call_ms(gqa, repeats) * 1e3:7.0f} us, "
              f"folded {per_call_ms(folded, repeats) * 1e3:7.0f} us")


def bench_packed_groups(rounds: int = 6, steps: int = 15) -> None:
    if not cpu_has_native_bf16():
        print("packed weights: this CPU has no native bfloat16, so the decoder never packs them")
        return
    model = random_model("0.6B", "cpu").to(torch.bfloat16)
    decoder = StaticCacheDecoder(model)
    groups = decoder._step_weight_groups()
    packs = {"grouped": PackedWeights.build(groups), "one per weight": PackedWeights.build([(w,) for g in groups for w in g])}
    if None in packs.values():
        print("packed weights: not packed here (free RAM or oneDNN's bit check said no)")
        return
    ids, mask = left_pad(cfg_prompt_pair(LMTokenizer(TOKENIZER)))
    tokens = torch.full((2, 1), 151700)
    times: dict[str, list[float]] = {name: [] for name in packs}
    hidden = {}
    with torch.inference_mode():
        decoder.reset(2, ids.shape[1] + 8)
        decoder.forward(ids, 0, mask, last_only=True)
        pos = ids.shape[1]
        for _ in range(rounds):
            for name, pack in packs.items():
                decoder.packed = pack
                hidden[name] = decoder.code_logits(decoder._decode(tokens, pos))  # also the warm-up
                times[name].append(per_call_ms(lambda: decoder.code_logits(decoder._decode(tokens, pos)), steps))
    same = torch.equal(*hidden.values())
    for name, ms in times.items():
        print(f"one CFG step of the 0.6B LM, packed {name:<14}: median {statistics.median(ms):6.1f} ms, "
              f"min {min(ms):6.1f} ms over {rounds} alternating rounds of {steps} steps")
    print(f"both give the same logits: {same}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (0: torch's default)")
    parser.add_argument("--keys", type=int, nargs="+", default=[181, 400, 800, 1300])
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--no-step", action="store_true", help="leave out the 0.6B step with the packed weights")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"threads={torch.get_num_threads()} native bf16={cpu_has_native_bf16()} AMX={cpu_has_amx()} "
          f"(the decoder attends with {'enable_gqa' if cpu_has_amx() else 'folded heads'} in bfloat16 here) "
          f"torch={torch.__version__}")
    bench_top_p(args.repeats)
    bench_attention(args.keys, args.repeats * 5)
    if not args.no_step:
        bench_packed_groups()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
