"""Loading the 5 Hz LM (official folder or ComfyUI repack) into a transformers `Qwen3ForCausalLM`.

The weights live in a plain `Qwen3ForCausalLM` (so the `generate` baseline and any tooling see a
normal model); decoding runs through `decoder.StaticCacheDecoder` on the same modules.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import torch

from ..errors import CheckpointError
from ..checkpoints import read_config_json, read_safetensors
from .constants import AUDIO_CODE_BASE, IM_END_ID
from .decoder import StaticCacheDecoder  # noqa: F401  (re-exported)


def resolve_dtype(dtype, device: torch.device) -> torch.dtype:
    """The LM dtype for a name or `auto` (memory/dtypes.py holds the rule)."""
    from ..errors import InputError
    from ..memory.dtypes import resolve_dtype as resolve

    try:
        return resolve(dtype, device, lm=True)
    except InputError as exc:
        raise CheckpointError(str(exc)) from None


def _read_safetensors(path: Path, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    # Converted tensor by tensor as read: a float32 file loaded in bf16 never sits in memory whole.
    return read_safetensors(path, dtype=dtype, what="LM")


def config_from_state_dict(sd: dict[str, torch.Tensor]) -> dict:
    """Qwen3 config of a ComfyUI repacked LM file (no config.json beside it)."""
    try:
        vocab, hidden = sd["model.embed_tokens.weight"].shape
        head_dim = sd["model.layers.0.self_attn.q_norm.weight"].shape[0]
        heads = sd["model.layers.0.self_attn.q_proj.weight"].shape[0] // head_dim
        kv_heads = sd["model.layers.0.self_attn.k_proj.weight"].shape[0] // head_dim
        inter = sd["model.layers.0.mlp.gate_proj.weight"].shape[0]
    except KeyError as exc:
        raise CheckpointError(
            f"not a Qwen3 LM state dict (missing {exc}); expected keys model.embed_tokens.weight, "
            "model.layers.N.self_attn.* (ComfyUI qwen_*_ace15.safetensors or an acestep-5Hz-lm folder)"
        ) from None
    layers = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"model\.layers\.(\d+)\.", k)))
    return {
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "vocab_size": vocab,
        "hidden_size": hidden, "intermediate_size": inter, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv_heads, "head_dim": head_dim,
        "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": True,
        "max_position_embeddings": 40960, "hidden_act": "silu", "attention_bias": False,
        "bos_token_id": 151643, "eos_token_id": IM_END_ID,
    }


def build_model(config: dict, state_dict: Optional[dict], dtype: torch.dtype, device: torch.device):
    """A `Qwen3ForCausalLM` with the given weights (or random ones when `state_dict` is None)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM
    from transformers.models.qwen3.modeling_qwen3 import Qwen3RotaryEmbedding

    cfg = Qwen3Config(**{k: v for k, v in config.items() if k not in ("architectures", "transformers_version")})
    cfg.tie_word_embeddings = True
    if state_dict is None:
        model = Qwen3ForCausalLM(cfg)
    else:
        with torch.device("meta"):
            model = Qwen3ForCausalLM(cfg)
        sd = {k: v for k, v in state_dict.items() if k != "lm_head.weight"}
        missing, unexpected = model.load_state_dict(sd, strict=False, assign=True)
        missing = [k for k in missing if k != "lm_head.weight"]
        if missing or unexpected:
            raise CheckpointError(
                f"LM weights do not match a Qwen3 LM of this config: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}"
            )
        model.model.rotary_emb = Qwen3RotaryEmbedding(cfg)
    model.lm_head.weight = model.model.embed_tokens.weight
    return model.to(device=device, dtype=dtype).eval()


def load_lm(path: Path, dtype, device) -> tuple[object, Path]:
    """Returns (model, folder-or-file). `path`: official LM folder or a single `.safetensors` file."""
    path = Path(path)
    device = torch.device(device)
    dt = resolve_dtype(dtype, device)
    if path.is_dir():
        weights = path / "model.safetensors"
        config_file = path / "config.json"
        if not weights.is_file() or not config_file.is_file():
            shards = sorted(path.glob("model-*.safetensors"))
            if not config_file.is_file() or not shards:
                raise CheckpointError(
                    f"{path} is not a 5 Hz LM folder: expected config.json and model.safetensors "
                    "(acestep-5Hz-lm-0.6B / 1.7B / 4B)"
                )
            sd = {}
            for shard in shards:
                sd.update(_read_safetensors(shard, dt))
        else:
            sd = _read_safetensors(weights, dt)
        config = read_config_json(config_file, "5 Hz LM")
    elif path.is_file():
        if path.suffix != ".safetensors":
            raise CheckpointError(f"{path}: only .safetensors LM files are supported")
        sd = _read_safetensors(path, dt)
        config = config_from_state_dict(sd)
    else:
        raise CheckpointError(f"LM not found: {path}")
    if "model.embed_tokens.weight" not in sd:
        raise CheckpointError(f"{path} is not a 5 Hz LM: it has no model.embed_tokens.weight")
    if sd["model.embed_tokens.weight"].shape[0] <= AUDIO_CODE_BASE:
        raise CheckpointError(
            f"{path} has a {sd['model.embed_tokens.weight'].shape[0]}-row vocabulary: that is the "
            "Qwen3 text encoder, not the 5 Hz LM (whose vocabulary is 217204)"
        )
    try:
        return build_model(config, sd, dt, device), path
    except torch.OutOfMemoryError:
        raise
    except (TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: the weights and the config do not make a 5 Hz LM ({exc}); "
                              "use the config.json that came with the weights") from exc
