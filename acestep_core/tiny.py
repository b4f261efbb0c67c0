"""Tiny checkpoints for proving an install without the 10 GB of real weights.

Prefers the tiny fixture set beside the repository (`../shared/fixtures/acestep-tiny`, or
`ACESTEP_TINY_DIR`); otherwise writes random tiny checkpoints in the official layout to a cache
folder. Either way the weights are random: the output is noise, not music.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import torch

TINY_DIT_CONFIG = {
    "model_type": "acestep", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 4,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "sliding_window": 16,
    "layer_types": ["sliding_attention", "full_attention"] * 2, "rope_theta": 1000000, "rms_norm_eps": 1e-6,
    "in_channels": 192, "audio_acoustic_hidden_dim": 64, "patch_size": 2, "text_hidden_dim": 8,
    "timbre_hidden_dim": 64, "timbre_fix_frame": 750, "num_lyric_encoder_hidden_layers": 2,
    "num_timbre_encoder_hidden_layers": 2, "num_attention_pooler_hidden_layers": 2, "pool_window_size": 5,
    "fsq_dim": 32, "fsq_input_levels": [8, 8, 8, 5, 5, 5], "fsq_input_num_quantizers": 1,
    "is_turbo": True, "model_version": "turbo",
}
TINY_VAE_CONFIG = {
    "audio_channels": 2, "channel_multiples": [1, 1, 1, 1, 1], "decoder_channels": 4,
    "decoder_input_channels": 64, "downsampling_ratios": [2, 4, 4, 6, 10], "encoder_hidden_size": 128,
    "sampling_rate": 48000,
}
SPECIAL_TOKENS = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645}


def find_tiny_fixtures() -> Optional[dict[str, Path]]:
    candidates = []
    if os.environ.get("ACESTEP_TINY_DIR"):
        candidates.append(Path(os.environ["ACESTEP_TINY_DIR"]))
    candidates.append(Path(__file__).resolve().parent.parent.parent / "shared" / "fixtures" / "acestep-tiny")
    for root in candidates:
        if (root / "acestep-v15-turbo-tiny" / "config.json").is_file():
            return {
                "dit": root / "acestep-v15-turbo-tiny",
                "dit_base": root / "acestep-v15-base-tiny",
                "vae": root / "vae-tiny",
                "text_encoder": root / "Qwen3-Embedding-tiny",
                "lm": root / "acestep-5Hz-lm-tiny",
            }
    return None


def _cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "acestep15-studio" / "tiny-random"


def _bytes_to_unicode() -> dict[int, str]:
    """The byte-level BPE alphabet: printable bytes map to themselves, the rest above 255."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    mapping, extra = {}, 0
    for b in range(256):
        if b in printable:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def _write_byte_tokenizer(folder: Path) -> None:
    vocab = {ch: i for i, ch in enumerate(_bytes_to_unicode().values())}
    vocab.update(SPECIAL_TOKENS)  # the special tokens keep their real Qwen ids
    tokenizer = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [
            {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
            for t, i in SPECIAL_TOKENS.items()
        ],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": []},
    }
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
        "padding_side": "right", "model_max_length": 32768,
        # transformers 5 rebuilds added tokens from this table; without it their ids shift.
        "added_tokens_decoder": {str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                                          "single_word": False, "special": True} for t, i in SPECIAL_TOKENS.items()}}))


def build_tiny_checkpoints(root: Optional[Path] = None, seed: int = 0) -> dict[str, Path]:
    from diffusers import (AceStepAudioTokenDetokenizer, AceStepAudioTokenizer, AceStepConditionEncoder,
                           AceStepTransformer1DModel, AutoencoderOobleck)
    from safetensors.torch import save_file
    from transformers import Qwen3Config, Qwen3Model

    from .dit import _kwargs_for, diffusers_to_official_key
    from .silence import builtin_silence_latent

    root = Path(root) if root else _cache_dir()
    paths = {"dit": root / "acestep-v15-turbo", "vae": root / "vae", "text_encoder": root / "Qwen3-Embedding-0.6B"}
    if all((p / "config.json").is_file() for p in paths.values()):
        return paths
    torch.manual_seed(seed)
    for p in paths.values():
        p.mkdir(parents=True, exist_ok=True)

    config = dict(TINY_DIT_CONFIG)
    encoder_config = {k: v for k, v in config.items() if k != "layer_types"}
    modules = {
        "transformer": AceStepTransformer1DModel(**_kwargs_for(AceStepTransformer1DModel, config)),
        "condition_encoder": AceStepConditionEncoder(**_kwargs_for(AceStepConditionEncoder, encoder_config)),
        "audio_tokenizer": AceStepAudioTokenizer(**_kwargs_for(AceStepAudioTokenizer, encoder_config)),
        "detokenizer": AceStepAudioTokenDetokenizer(**_kwargs_for(AceStepAudioTokenDetokenizer, encoder_config)),
    }
    tensors = {}
    for component, module in modules.items():
        for key, value in module.state_dict().items():
            if key == "silence_latent":
                continue
            tensors[diffusers_to_official_key(component, key)] = value.to(torch.bfloat16).contiguous()
    save_file(tensors, str(paths["dit"] / "model.safetensors"))
    (paths["dit"] / "config.json").write_text(json.dumps(config, indent=1))
    torch.save(builtin_silence_latent(1500).transpose(1, 2).contiguous(), str(paths["dit"] / "silence_latent.pt"))

    vae = AutoencoderOobleck(**TINY_VAE_CONFIG)
    vae.save_pretrained(str(paths["vae"]), safe_serialization=True)

    te_config = Qwen3Config(vocab_size=151669, hidden_size=8, intermediate_size=16, num_hidden_layers=2,
                            num_attention_heads=1, num_key_value_heads=1, head_dim=8, rope_theta=1000000.0,
                            tie_word_embeddings=True, max_position_embeddings=32768)
    te = Qwen3Model(te_config)
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in te.state_dict().items()},
              str(paths["text_encoder"] / "model.safetensors"))
    te_dict = te_config.to_dict()
    te_dict["architectures"] = ["Qwen3Model"]
    (paths["text_encoder"] / "config.json").write_text(json.dumps(te_dict, indent=1, default=str))
    _write_byte_tokenizer(paths["text_encoder"])
    return paths
