"""Tiny checkpoints for proving an install without the 10 GB of real weights.

Uses the tiny fixture set named by `ACESTEP_TINY_DIR` (the tests point it at `tests/fixtures/`);
otherwise writes random tiny checkpoints in the official layout (DiT turbo and base, VAE, text
encoder and a 5 Hz LM with the real special and audio-code token ids) to the user's cache folder.
Either way the weights are random: the output is noise, not music.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
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
# The Qwen special tokens at their real ids; the LM's tokenizer carries all of them, the text
# encoder's only the three its prompts use.
QWEN_SPECIAL_TOKENS = {
    "<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645,
    "<|object_ref_start|>": 151646, "<|object_ref_end|>": 151647, "<|box_start|>": 151648,
    "<|box_end|>": 151649, "<|quad_start|>": 151650, "<|quad_end|>": 151651, "<|vision_start|>": 151652,
    "<|vision_end|>": 151653, "<|vision_pad|>": 151654, "<|image_pad|>": 151655, "<|video_pad|>": 151656,
    "<tool_call>": 151657, "</tool_call>": 151658, "<|fim_prefix|>": 151659, "<|fim_middle|>": 151660,
    "<|fim_suffix|>": 151661, "<|fim_pad|>": 151662, "<|repo_name|>": 151663, "<|file_sep|>": 151664,
    "<tool_response>": 151665, "</tool_response>": 151666, "<think>": 151667, "</think>": 151668,
}
SPECIAL_TOKENS = {t: QWEN_SPECIAL_TOKENS[t] for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")}
CACHE_VERSION = "v2"  # bump when the random set changes shape, so an old cache is not reused


def find_tiny_fixtures() -> Optional[dict[str, Path]]:
    """The tiny set named by `ACESTEP_TINY_DIR` (folders with the fixture names), if any."""
    root = os.environ.get("ACESTEP_TINY_DIR")
    if not root or not (Path(root) / "acestep-v15-turbo-tiny" / "config.json").is_file():
        return None
    root = Path(root)
    return {
        "dit": root / "acestep-v15-turbo-tiny",
        "dit_base": root / "acestep-v15-base-tiny",
        "vae": root / "vae-tiny",
        "text_encoder": root / "Qwen3-Embedding-tiny",
        "lm": root / "acestep-5Hz-lm-tiny",
    }


def _cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "acestep15-studio" / f"tiny-random-{CACHE_VERSION}"


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


def _write_byte_tokenizer(folder: Path, special: dict[str, int], audio_codes: int = 0) -> None:
    """A byte-level BPE tokenizer with `special` at their real ids and `audio_codes` code tokens after them.

    Ids between the 256 byte tokens and the first special token are filled with unreachable
    placeholder entries, so every id below the vocabulary size decodes to some text, as with the
    real Qwen vocabulary.
    """
    alphabet = list(_bytes_to_unicode().values())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    if audio_codes:
        vocab.update({f"w{i}": i for i in range(len(alphabet), min(special.values()))})
    vocab.update(special)  # tokenizers keeps an added token's id only when the vocabulary holds it
    added = [(t, i, True) for t, i in special.items()]
    base = max(special.values()) + 1
    added += [(f"<|audio_code_{n}|>", base + n, False) for n in range(audio_codes)]
    tokenizer = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [
            {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
             "special": is_special}
            for t, i, is_special in added
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
                                          "single_word": False, "special": is_special} for t, i, is_special in added}}))


TINY_FOLDERS = {"dit": "acestep-v15-turbo", "dit_base": "acestep-v15-base", "vae": "vae",
                "text_encoder": "Qwen3-Embedding-0.6B", "lm": "acestep-5Hz-lm-0.6B"}


def build_tiny_checkpoints(root: Optional[Path] = None, seed: int = 0) -> dict[str, Path]:
    """Random tiny checkpoints in the official layout (DiT turbo and base, VAE, text encoder, LM).

    Written once into `root` (default: the user's cache); later calls reuse them. The set is built
    in a scratch folder and moved into place whole, so an interrupted or concurrent build never
    leaves a half-written set behind.
    """
    root = Path(root) if root else _cache_dir()
    paths = {name: root / folder for name, folder in TINY_FOLDERS.items()}
    if all((p / "config.json").is_file() for p in paths.values()):
        return paths
    root.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        _write_tiny_set(scratch, seed)
        if root.exists():  # an older, incomplete set: replace it
            shutil.rmtree(root, ignore_errors=True)
        try:
            os.replace(scratch, root)
        except OSError:
            if not all((p / "config.json").is_file() for p in paths.values()):
                raise  # nobody else finished a set in the meantime
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return paths


def _randomize(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Give every parameter a non-trivial random value: libraries zero some layers at init, which
    would make the random model's output constant (a silent file instead of audible noise)."""
    with torch.no_grad():
        for name, param in module.named_parameters():
            if name.endswith(("norm.weight", "weight_g")) or "layernorm" in name:
                param.copy_(1.0 + 0.1 * torch.randn(param.shape, generator=generator))
            else:
                param.copy_(0.2 * torch.randn(param.shape, generator=generator))


def _write_tiny_set(root: Path, seed: int) -> None:
    from diffusers import (AceStepAudioTokenDetokenizer, AceStepAudioTokenizer, AceStepConditionEncoder,
                           AceStepTransformer1DModel, AutoencoderOobleck)
    from safetensors.torch import save_file
    from transformers import Qwen3Config, Qwen3ForCausalLM, Qwen3Model

    from .dit import _kwargs_for, diffusers_to_official_key
    from .lm.constants import NUM_CODE_SLOTS
    from .silence import builtin_silence_latent

    generator = torch.Generator().manual_seed(seed)
    paths = {name: root / folder for name, folder in TINY_FOLDERS.items()}
    for p in paths.values():
        p.mkdir(parents=True)

    for name, flags in (("dit", {"is_turbo": True, "model_version": "turbo"}),
                        ("dit_base", {"is_turbo": False, "model_version": "base"})):
        config = {**TINY_DIT_CONFIG, **flags}
        encoder_config = {k: v for k, v in config.items() if k != "layer_types"}
        modules = {
            "transformer": AceStepTransformer1DModel(**_kwargs_for(AceStepTransformer1DModel, config)),
            "condition_encoder": AceStepConditionEncoder(**_kwargs_for(AceStepConditionEncoder, encoder_config)),
            "audio_tokenizer": AceStepAudioTokenizer(**_kwargs_for(AceStepAudioTokenizer, encoder_config)),
            "detokenizer": AceStepAudioTokenDetokenizer(**_kwargs_for(AceStepAudioTokenDetokenizer, encoder_config)),
        }
        tensors = {}
        for component, module in modules.items():
            _randomize(module, generator)
            for key, value in module.state_dict().items():
                if key == "silence_latent":
                    continue
                tensors[diffusers_to_official_key(component, key)] = value.to(torch.bfloat16).contiguous()
        save_file(tensors, str(paths[name] / "model.safetensors"))
        (paths[name] / "config.json").write_text(json.dumps(config, indent=1))
        torch.save(builtin_silence_latent(1500).transpose(1, 2).contiguous(), str(paths[name] / "silence_latent.pt"))

    vae = AutoencoderOobleck(**TINY_VAE_CONFIG)
    vae.save_pretrained(str(paths["vae"]), safe_serialization=True)

    qwen = dict(hidden_size=8, intermediate_size=16, num_hidden_layers=2, num_attention_heads=1,
                num_key_value_heads=1, head_dim=8, rope_theta=1000000.0, tie_word_embeddings=True,
                max_position_embeddings=40960, bos_token_id=151643, eos_token_id=151645)
    te_config = Qwen3Config(vocab_size=151669, **qwen)
    te = Qwen3Model(te_config)
    _randomize(te, generator)
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in te.state_dict().items()},
              str(paths["text_encoder"] / "model.safetensors"))
    _write_config(paths["text_encoder"], te_config, "Qwen3Model")
    _write_byte_tokenizer(paths["text_encoder"], SPECIAL_TOKENS)

    # The LM: the real vocabulary size 217204 = 151669 Qwen entries + 65535 audio-code slots.
    lm_config = Qwen3Config(vocab_size=151669 + NUM_CODE_SLOTS, **qwen)
    lm = Qwen3ForCausalLM(lm_config)
    _randomize(lm, generator)
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in lm.state_dict().items() if k != "lm_head.weight"},
              str(paths["lm"] / "model.safetensors"))
    _write_config(paths["lm"], lm_config, "Qwen3ForCausalLM")
    _write_byte_tokenizer(paths["lm"], QWEN_SPECIAL_TOKENS, audio_codes=NUM_CODE_SLOTS)


def _write_config(folder: Path, config, architecture: str) -> None:
    data = config.to_dict()
    data["architectures"] = [architecture]
    (folder / "config.json").write_text(json.dumps(data, indent=1, default=str))
