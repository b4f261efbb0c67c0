"""Loading the 5 Hz LM (official folder or ComfyUI repack) and a static-KV-cache decoder on its modules.

The weights live in a transformers `Qwen3ForCausalLM` (so the plain-`generate` baseline and any
tooling see a normal model); decoding runs through `StaticCacheDecoder`, which calls the same
`nn.Linear` / `Qwen3RMSNorm` modules but keeps the KV cache in preallocated tensors, prefills in
one pass, runs the cond + uncond rows of CFG as one batch and can project onto the audio-code rows
of the tied embedding only (64 001 of 217 204 rows) when only codes are allowed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from ..errors import CheckpointError
from .constants import AUDIO_CODE_BASE, IM_END_ID, NUM_VALID_CODES


def resolve_dtype(dtype, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype not in table:
        raise CheckpointError(f"unknown dtype {dtype!r}: use auto, float32, bfloat16 or float16")
    return table[dtype]


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as exc:  # corrupt or not a safetensors file
        raise CheckpointError(f"cannot read LM weights {path}: {exc}") from exc


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
                sd.update(_read_safetensors(shard))
        else:
            sd = _read_safetensors(weights)
        config = json.loads(config_file.read_text())
    elif path.is_file():
        if path.suffix != ".safetensors":
            raise CheckpointError(f"{path}: only .safetensors LM files are supported")
        sd = _read_safetensors(path)
        config = config_from_state_dict(sd)
    else:
        raise CheckpointError(f"LM not found: {path}")
    if sd["model.embed_tokens.weight"].shape[0] <= AUDIO_CODE_BASE:
        raise CheckpointError(
            f"{path} has a {sd['model.embed_tokens.weight'].shape[0]}-row vocabulary: that is the "
            "Qwen3 text encoder, not the 5 Hz LM (whose vocabulary is 217204)"
        )
    return build_model(config, sd, dt, device), path


class StaticCacheDecoder:
    """Prefill / one-token decode over preallocated KV tensors, on the modules of a Qwen3ForCausalLM."""

    def __init__(self, model):
        self.model = model
        cfg = model.config
        self.layers = list(model.model.layers)
        self.norm = model.model.norm
        self.embed = model.model.embed_tokens
        self.n_heads = cfg.num_attention_heads
        self.n_kv = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        rope = getattr(cfg, "rope_parameters", None) or {}
        self.rope_theta = float(rope.get("rope_theta", getattr(cfg, "rope_theta", 1e6)))
        weight = self.embed.weight
        self.device, self.dtype = weight.device, weight.dtype
        # Rows of the tied head that codes decoding can produce: codes 0..63999, then EOS.
        self.codes_head = torch.cat(
            [weight[AUDIO_CODE_BASE:AUDIO_CODE_BASE + NUM_VALID_CODES], weight[IM_END_ID:IM_END_ID + 1]]
        ).contiguous()
        self.k_cache: list[torch.Tensor] = []
        self.v_cache: list[torch.Tensor] = []
        self.capacity = (0, 0)
        self._cos = self._sin = None
        self.key_valid: Optional[torch.Tensor] = None
        self.has_padding = False

    # ---- cache ---------------------------------------------------------------------------------
    def reset(self, batch: int, length: int) -> None:
        """Make room for `batch` rows of `length` positions (reuses the buffers when they fit)."""
        cap_b, cap_l = self.capacity
        if batch != cap_b or length > cap_l:
            length = max(length, cap_l if batch == cap_b else 0)
            length = (length + 255) // 256 * 256
            shape = (batch, self.n_kv, length, self.head_dim)
            self.k_cache = [torch.zeros(shape, device=self.device, dtype=self.dtype) for _ in self.layers]
            self.v_cache = [torch.zeros(shape, device=self.device, dtype=self.dtype) for _ in self.layers]
            self.capacity = (batch, length)
            inv_freq = 1.0 / (self.rope_theta ** (
                torch.arange(0, self.head_dim, 2, dtype=torch.int64).to(device=self.device, dtype=torch.float)
                / self.head_dim))
            pos = torch.arange(length, device=self.device, dtype=torch.float)
            freqs = pos[:, None] * inv_freq[None, :]
            emb = torch.cat((freqs, freqs), dim=-1)
            self._cos, self._sin = emb.cos().to(self.dtype), emb.sin().to(self.dtype)
        self.key_valid = torch.ones(batch, self.capacity[1], dtype=torch.bool, device=self.device)
        self.has_padding = False

    # ---- forward -------------------------------------------------------------------------------
    @staticmethod
    def _rotate_half(x):
        half = x.shape[-1] // 2
        return torch.cat((-x[..., half:], x[..., :half]), dim=-1)

    def forward(self, input_ids: torch.Tensor, start: int, attention_mask: Optional[torch.Tensor] = None):
        """Hidden states after the final norm for `input_ids` [B, T] at positions start..start+T-1.

        `attention_mask` [B, T] marks left padding of a prefill; like the reference, padded slots
        keep their positions (0..L-1 for every row) and are hidden from every later query.
        """
        bsz, length = input_ids.shape
        end = start + length
        if attention_mask is not None and not bool(attention_mask.all()):
            self.key_valid[:, start:end] = attention_mask.bool()
            self.has_padding = True
        mask = None
        if self.has_padding or length > 1:
            q_pos = torch.arange(start, end, device=self.device)
            k_pos = torch.arange(end, device=self.device)
            causal = k_pos[None, :] <= q_pos[:, None]
            mask = causal[None] & self.key_valid[:, None, :end]
            mask |= (k_pos[None, :] == q_pos[:, None])[None]  # padded queries see themselves: no NaN
            mask = mask[:, None]
        cos = self._cos[start:end][None, None]
        sin = self._sin[start:end][None, None]
        h = self.embed(input_ids)
        for i, layer in enumerate(self.layers):
            attn = layer.self_attn
            x = layer.input_layernorm(h)
            q = attn.q_norm(attn.q_proj(x).view(bsz, length, self.n_heads, self.head_dim)).transpose(1, 2)
            k = attn.k_norm(attn.k_proj(x).view(bsz, length, self.n_kv, self.head_dim)).transpose(1, 2)
            v = attn.v_proj(x).view(bsz, length, self.n_kv, self.head_dim).transpose(1, 2)
            q = q * cos + self._rotate_half(q) * sin
            k = k * cos + self._rotate_half(k) * sin
            self.k_cache[i][:, :, start:end] = k
            self.v_cache[i][:, :, start:end] = v
            out = F.scaled_dot_product_attention(
                q, self.k_cache[i][:, :, :end], self.v_cache[i][:, :, :end], attn_mask=mask,
                enable_gqa=self.n_kv != self.n_heads,
            )
            h = h + attn.o_proj(out.transpose(1, 2).reshape(bsz, length, -1))
            h = h + layer.mlp(layer.post_attention_layernorm(h))
        return self.norm(h)

    def full_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden, self.embed.weight).float()

    def codes_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits over [code 0..63999, EOS] only."""
        return F.linear(hidden, self.codes_head).float()
