"""The LM codes phase with CFG: the official ACE-Step 1.5 PyTorch loop against ours, on this machine.

Both run the same random weights at the real 0.6B size: the official code in float32 (its CPU dtype),
ours in what `--dtype auto` picks on this machine (bfloat16 on a CPU with native bf16, else float32;
`--ours-dtype float32` for the like-for-like figure). The same prompt pair (cond + uncond, left-padded), 150 audio codes (30 s), CFG 2.0,
temperature 0.85, top-p 0.9, constrained decoding. Official: `LLMHandler._generate_with_cfg_custom`
with its `MetadataConstrainedLogitsProcessor` in the codes phase (what its `pt` backend runs on a
CPU, where vllm is unavailable). Ours: `decode_codes`. Wall time, prefill included, runs alternate.

The official code is not part of this project: point --official at a checkout of
https://github.com/ace-step/ACE-Step-1.5 (it needs `loguru` and `pyyaml` importable beside it).

    python bench/bench_lm_official.py --official ~/src/ACE-Step-1.5 --threads 1
    python bench/bench_lm_official.py --official ~/src/ACE-Step-1.5          # torch's default threads
    python bench/bench_lm_official.py --official ~/src/ACE-Step-1.5 --ours-dtype float32
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_lm import TOKENIZER, cfg_prompt_pair, random_model  # noqa: E402

from acestep_core.lm import LMSampling  # noqa: E402
from acestep_core.memory.dtypes import resolve_dtype  # noqa: E402
from acestep_core.lm.decoder import StaticCacheDecoder  # noqa: E402
from acestep_core.lm.generation import decode_codes, left_pad  # noqa: E402
from acestep_core.lm.tokenizer import LMTokenizer  # noqa: E402

SECONDS, CFG, TEMPERATURE, TOP_P = 30, 2.0, 0.85, 0.9


def official_runner(source: Path, model, rows):
    sys.path.insert(0, str(source))
    try:
        from loguru import logger
        from transformers import AutoTokenizer

        from acestep.constrained_logits_processor import MetadataConstrainedLogitsProcessor
        from acestep.llm_inference import LLMHandler
    except ImportError as exc:
        raise SystemExit(f"cannot import the official code from {source}: {exc} "
                         "(--official must be an ACE-Step-1.5 checkout; pip install loguru pyyaml)") from None
    logger.remove()
    handler = LLMHandler()
    handler.llm, handler.device, handler.disable_tqdm = model, "cpu", True
    handler.llm_tokenizer = AutoTokenizer.from_pretrained(str(TOKENIZER), use_fast=True)
    handler.constrained_processor = MetadataConstrainedLogitsProcessor(
        tokenizer=handler.llm_tokenizer, enabled=True, debug=False, max_duration=600)
    ids, mask = left_pad(rows)
    pad = handler.llm_tokenizer.pad_token_id or handler.llm_tokenizer.eos_token_id

    def run() -> int:
        processor = handler._setup_constrained_processor(
            use_constrained_decoding=True, constrained_decoding_debug=False, target_duration=SECONDS,
            user_metadata=None, stop_at_reasoning=False, skip_genres=True, skip_caption=True,
            skip_language=True, generation_phase="codes")
        out = handler._generate_with_cfg_custom(
            batch_input_ids=ids, batch_attention_mask=mask, max_new_tokens=SECONDS * 5 + 500,
            temperature=TEMPERATURE, cfg_scale=CFG, top_k=None, top_p=TOP_P, repetition_penalty=1.0,
            pad_token_id=pad, streamer=None, constrained_processor=processor)
        return out.shape[1] - ids.shape[1]

    return run


def ours_runner(model, rows):
    decoder = StaticCacheDecoder(model)
    sampling = LMSampling(temperature=TEMPERATURE, cfg_scale=CFG, top_p=TOP_P)

    def run() -> int:
        result = decode_codes(decoder, rows, SECONDS * 5, sampling, torch.Generator().manual_seed(1), CFG)
        return len(result.generated_ids)

    return run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", type=Path, required=True, help="an ACE-Step-1.5 checkout")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs of each")
    parser.add_argument("--ours-dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                        help="our LM's dtype (auto: what --dtype auto picks here); the official runs float32")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = random_model("0.6B", "cpu")
    ours_dtype = resolve_dtype(args.ours_dtype, "cpu", lm=True)
    # The same weights, rounded to our dtype (what loading a checkpoint with that dtype gives).
    ours_model = model if ours_dtype == torch.float32 else copy.deepcopy(model).to(ours_dtype)
    rows = cfg_prompt_pair(LMTokenizer(TOKENIZER))
    runners = {"official": official_runner(args.official.expanduser().resolve(), model, rows),
               "ours": ours_runner(ours_model, rows)}
    print(f"official float32, ours {str(ours_dtype).removeprefix('torch.')}; "
          f"threads={torch.get_num_threads()} cpus={os.cpu_count()} torch={torch.__version__} "
          f"ACESTEP_LM_DECODE_THREADS={os.environ.get('ACESTEP_LM_DECODE_THREADS', 'auto')}", flush=True)
    best: dict[str, float] = {}
    for _ in range(args.rounds):
        for name, run in runners.items():
            load = os.getloadavg()[0]
            start = time.perf_counter()
            tokens = run()
            seconds = time.perf_counter() - start
            best[name] = min(best.get(name, seconds), seconds)
            print(f"{name:<9} {tokens} tokens (150 codes + EOS) {seconds:7.2f} s  "
                  f"{SECONDS * 5 / seconds:5.2f} codes/s  load {load:.2f}", flush=True)
    print(f"best: official {best['official']:.2f} s, ours {best['ours']:.2f} s, "
          f"ours {best['official'] / best['ours']:.2f}x faster")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
