"""ACE-Step 1.5 XL (the 4B-class DiT): what sets it apart from the 2B model (docs/architecture.md).

* The decoder is wider than the rest: the condition encoder, audio tokenizer, detokenizer and
  `null_condition_emb` keep the 2B widths under `encoder_*` config names.
* The timbre encoder prepends its learned CLS token (`encoder.timbre_encoder.special_token`) to the
  reference sequence and reads the timbre embedding at that position. The 2B checkpoints carry the
  same parameter but the 2B code never uses it; diffusers' class never does, so XL needs the
  subclass below.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.pipelines.ace_step.modeling_ace_step import AceStepTimbreEncoder

from .errors import CheckpointError

TIMBRE_CLS_KEY = "encoder.timbre_encoder.special_token"

# The published XL config: what a ComfyUI XL file cannot show in its shapes.
PUBLISHED_XL_DEFAULTS: dict[str, Any] = {
    "hidden_size": 2560,
    "intermediate_size": 9728,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "encoder_hidden_size": 2048,
    "encoder_intermediate_size": 6144,
    "encoder_num_attention_heads": 16,
    "encoder_num_key_value_heads": 8,
}


def is_xl_config(config: dict) -> bool:
    """XL = separate encoder sizes that differ from the decoder's, or an XL model_version."""
    encoder_hidden = config.get("encoder_hidden_size")
    if encoder_hidden is not None and encoder_hidden != config.get("hidden_size"):
        return True
    return str(config.get("model_version") or "").lower().startswith("xl")


class AceStepTimbreEncoderWithCLS(AceStepTimbreEncoder):
    """diffusers' timbre encoder with the official XL CLS token in front of the sequence.

    The token joins right after `embed_tokens`, so the layers, RoPE positions and the sliding
    window all see it at position 0, and the parent's "take position 0" returns its output.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.embed_tokens.register_forward_hook(self._prepend_cls)

    def _prepend_cls(self, module: torch.nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
        token = self.special_token.to(dtype=output.dtype, device=output.device)
        return torch.cat([token.expand(output.shape[0], 1, -1), output], dim=1)


def use_timbre_cls(condition_encoder: torch.nn.Module) -> None:
    """Swap the condition encoder's timbre encoder for the CLS variant (same config, same keys)."""
    plain = condition_encoder.timbre_encoder
    device = next(plain.parameters()).device
    with torch.device(device):
        condition_encoder.timbre_encoder = AceStepTimbreEncoderWithCLS(**dict(plain.config))


def check_timbre_cls(state_dict: dict[str, torch.Tensor], encoder_hidden_size: int, source: str) -> None:
    """Every XL result depends on the CLS token, so a file without a usable one must not load."""
    token = state_dict.get(TIMBRE_CLS_KEY)
    if token is None:
        raise CheckpointError(
            f"{source} is an ACE-Step 1.5 XL DiT but lacks {TIMBRE_CLS_KEY}, the timbre encoder's CLS token "
            "that the XL model prepends in every generation. The file is incomplete or was converted by a tool "
            "that drops it; download the official XL weights (or the ComfyUI XL repack) again."
        )
    if tuple(token.shape) != (1, 1, encoder_hidden_size):
        raise CheckpointError(
            f"{source}: {TIMBRE_CLS_KEY} has shape {tuple(token.shape)}, but this XL model needs "
            f"(1, 1, {encoder_hidden_size}) (the condition encoder's width). The file does not match its config."
        )
