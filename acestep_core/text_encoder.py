"""Qwen3-Embedding text encoder: caption through the whole model, lyrics through its embedding table.

Loads the official folder (`Qwen3-Embedding-0.6B/`: config, weights, tokenizer) or ComfyUI's
`qwen_0.6b_ace15.safetensors` (keys under `model.`, no tokenizer inside: a tokenizer folder must be
given separately).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from .errors import CheckpointError
from .prompts import CAPTION_MAX_TOKENS, LYRICS_MAX_TOKENS
from .checkpoints import check_state_dict, read_safetensors, read_sharded_or_single

END_OF_TEXT_ID = 151643
TEXT_ENCODER_VOCAB = 151669
COMFY_TE_PREFIXES = ("text_encoders.qwen3_06b.transformer.", "qwen3_06b.transformer.")


def qwen3_config_from_weights(state_dict: dict[str, torch.Tensor], **overrides):
    from transformers import Qwen3Config

    head_dim = state_dict["layers.0.self_attn.q_norm.weight"].shape[0]
    layers = 1 + max(int(k.split(".")[1]) for k in state_dict if k.startswith("layers."))
    values = dict(
        vocab_size=state_dict["embed_tokens.weight"].shape[0],
        hidden_size=state_dict["embed_tokens.weight"].shape[1],
        intermediate_size=state_dict["layers.0.mlp.gate_proj.weight"].shape[0],
        num_hidden_layers=layers,
        num_attention_heads=state_dict["layers.0.self_attn.q_proj.weight"].shape[0] // head_dim,
        num_key_value_heads=state_dict["layers.0.self_attn.k_proj.weight"].shape[0] // head_dim,
        head_dim=head_dim,
        rope_theta=1000000.0,
        rms_norm_eps=1e-6,
        max_position_embeddings=32768,
        tie_word_embeddings=True,
    )
    values.update(overrides)
    return Qwen3Config(**values)


def build_qwen3_model(config, state_dict: dict[str, torch.Tensor], source: str, dtype: torch.dtype) -> nn.Module:
    from transformers import Qwen3Model
    from transformers.models.qwen3.modeling_qwen3 import Qwen3RotaryEmbedding

    config._attn_implementation = "sdpa"
    with torch.device("meta"):
        model = Qwen3Model(config)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    check_state_dict(source, expected, state_dict)
    model.load_state_dict({k: v.to(dtype) for k, v in state_dict.items()}, strict=True, assign=True)
    # Rotary frequencies are a non-persistent buffer: rebuild it off the meta device.
    model.rotary_emb = Qwen3RotaryEmbedding(config=config)
    return model.eval().requires_grad_(False)


def _strip_model_prefix(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if any(k.startswith("model.") for k in state_dict):
        return {k[len("model."):]: v for k, v in state_dict.items() if k.startswith("model.")}
    return state_dict


def load_tokenizer(folder: Path):
    from transformers import AutoTokenizer

    folder = Path(folder)
    if not (folder / "tokenizer.json").is_file() and not (folder / "vocab.json").is_file():
        raise CheckpointError(
            f"no tokenizer in {folder}: expected tokenizer.json (or vocab.json + merges.txt). "
            "Point the text tokenizer at the official Qwen3-Embedding-0.6B folder or a Qwen tokenizer folder."
        )
    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot load the tokenizer in {folder}: {exc}") from exc


@dataclass
class TextEncoder:
    model: nn.Module
    tokenizer: object
    source: str
    appends_eos: bool

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    def tokenize(self, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and mask exactly as the official code gets them (the Qwen3-Embedding tokenizer
        appends `<|endoftext|>` itself; a plain Qwen tokenizer gets it appended here)."""
        if self.appends_eos:
            enc = self.tokenizer(texts, padding="longest", truncation=True, max_length=max_length, return_tensors="pt")
            return enc["input_ids"], enc["attention_mask"]
        rows = [self.tokenizer(t, truncation=True, max_length=max_length - 1)["input_ids"] + [END_OF_TEXT_ID] for t in texts]
        longest = max(len(r) for r in rows)
        ids = torch.full((len(rows), longest), END_OF_TEXT_ID, dtype=torch.long)
        mask = torch.zeros((len(rows), longest), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        return ids, mask

    @torch.no_grad()
    def encode_captions(self, prompts: list[str], device, dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ids, mask = self.tokenize(prompts, CAPTION_MAX_TOKENS)
        # No attention mask, as the reference: right padding + causal model leaves valid tokens untouched.
        hidden = self.model(input_ids=ids.to(device)).last_hidden_state
        return hidden.to(dtype), mask.to(device), ids

    @torch.no_grad()
    def embed_lyrics(self, prompts: list[str], device, dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ids, mask = self.tokenize(prompts, LYRICS_MAX_TOKENS)
        embeddings = self.model.embed_tokens(ids.to(device))
        return embeddings.to(dtype), mask.to(device), ids


def _tokenizer_appends_eos(tokenizer) -> bool:
    ids = tokenizer("a")["input_ids"]
    return bool(ids) and ids[-1] == END_OF_TEXT_ID


def _make(model, tokenizer, source) -> TextEncoder:
    if getattr(tokenizer, "padding_side", "right") != "right":
        tokenizer.padding_side = "right"
    return TextEncoder(model=model, tokenizer=tokenizer, source=source, appends_eos=_tokenizer_appends_eos(tokenizer))


def load_text_encoder(
    path: Path | str,
    tokenizer_path: Optional[Path | str] = None,
    dtype: torch.dtype = torch.float32,
    tensors: dict[str, torch.Tensor] | None = None,
) -> TextEncoder:
    path = Path(path)
    if tensors is None and path.is_dir():
        config_file = path / "config.json"
        if not config_file.is_file():
            raise CheckpointError(f"missing {config_file}: the text encoder folder holds config.json")
        from transformers import Qwen3Config

        try:
            config = Qwen3Config(**{k: v for k, v in json.loads(config_file.read_text()).items() if k not in ("architectures",)})
        except Exception as exc:
            raise CheckpointError(f"cannot parse {config_file}: {exc}") from exc
        state_dict, source = read_sharded_or_single(path)
        model = build_qwen3_model(config, _strip_model_prefix(state_dict), source, dtype)
        tokenizer = load_tokenizer(Path(tokenizer_path) if tokenizer_path else path)
        return _make(model, tokenizer, source)
    if tensors is None and not path.is_file():
        raise CheckpointError(
            f"text encoder not found: {path}. Give the official Qwen3-Embedding-0.6B folder or "
            "ComfyUI's text_encoders/qwen_0.6b_ace15.safetensors."
        )
    raw = read_safetensors(path) if tensors is None else tensors
    for prefix in COMFY_TE_PREFIXES:
        if any(k.startswith(prefix) for k in raw):
            raw = {k[len(prefix):]: v for k, v in raw.items() if k.startswith(prefix)}
            break
    state_dict = _strip_model_prefix(raw)
    if "embed_tokens.weight" not in state_dict or "layers.0.self_attn.q_norm.weight" not in state_dict:
        raise CheckpointError(f"{path} is not a Qwen3 text encoder file (no embed_tokens / q_norm weights)")
    vocab = state_dict["embed_tokens.weight"].shape[0]
    if vocab != TEXT_ENCODER_VOCAB:
        raise CheckpointError(
            f"{path} has a vocabulary of {vocab} tokens; the ACE-Step caption encoder (Qwen3-Embedding-0.6B, "
            f"qwen_0.6b_ace15.safetensors) has {TEXT_ENCODER_VOCAB}. A 5 Hz LM file (qwen_1.7b/4b_ace15) goes to the LM slot."
        )
    config = qwen3_config_from_weights(state_dict)
    model = build_qwen3_model(config, state_dict, str(path), dtype)
    if tokenizer_path is None:
        raise CheckpointError(
            f"{path} carries no tokenizer. Give a tokenizer folder (the official Qwen3-Embedding-0.6B folder, "
            "or the Qwen tokenizer files of a ComfyUI install, e.g. comfy/text_encoders/qwen25_tokenizer)."
        )
    return _make(model, load_tokenizer(Path(tokenizer_path)), str(path))
