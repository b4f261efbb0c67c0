"""Padded latent frames hidden from the DiT's self-attention (the reference's `latent_masks`).

An item is shorter than the latent length when its code string gives fewer than 128 frames, when a
text2music duration is under 5.12 s, or when batch items have different lengths. Its padded frames
must not change its own frames, so they are masked as attention keys in every self-attention layer
(the band of the sliding layers stays as it is; cross-attention is untouched). diffusers' DiT forward
takes no mask, so the mask reaches the layers through their attention processor.

The DiT works on patches of `patch_size` frames: a patch is a valid key when any of its frames is
valid, and the padded frames are zeroed in the DiT input, so an odd-length item's last patch sees
exactly the zero padding it would see if it ran alone.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional, Sequence

import torch
from diffusers.models.transformers.ace_step_transformer import AceStepAttnProcessor2_0


class PaddingMaskedAttnProcessor(AceStepAttnProcessor2_0):
    """diffusers' ACE-Step attention processor, plus a key-padding mask set for one forward."""

    def __init__(self):
        super().__init__()
        self.key_valid: Optional[torch.Tensor] = None  # [B, tokens] bool, None = no padding

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None):
        if self.key_valid is not None and not attn.is_cross_attention:
            attention_mask = _with_key_padding(attention_mask, self.key_valid, hidden_states.dtype)
        return super().__call__(attn, hidden_states, encoder_hidden_states=encoder_hidden_states,
                                attention_mask=attention_mask, image_rotary_emb=image_rotary_emb)


def _with_key_padding(attention_mask: Optional[torch.Tensor], key_valid: torch.Tensor, dtype) -> torch.Tensor:
    """An additive [B, 1, L, L] mask: the layer's own mask (if any) with padded keys removed from the
    rows of valid queries. Padded queries keep their band, so no row is ever fully masked (NaN)."""
    minimum = torch.finfo(dtype).min
    keep = key_valid[:, None, None, :] | ~key_valid[:, None, :, None]
    base = torch.zeros((), dtype=dtype, device=key_valid.device) if attention_mask is None else attention_mask.to(dtype)
    return torch.where(keep, base, minimum)


def install(transformer: torch.nn.Module) -> PaddingMaskedAttnProcessor:
    """One shared processor on every self-attention layer of the DiT."""
    processor = PaddingMaskedAttnProcessor()
    for layer in transformer.layers:
        layer.self_attn.set_processor(processor)
    transformer.padding_processor = processor
    return processor


def frame_mask(valid_frames: Optional[Sequence[int]], frames: int, device=None) -> Optional[torch.Tensor]:
    """[B, frames] bool, True over each item's own frames; None when nothing is padded."""
    if valid_frames is None or all(int(v) >= frames for v in valid_frames):
        return None
    lengths = torch.tensor([min(int(v), frames) for v in valid_frames], device=device)
    return torch.arange(frames, device=device)[None, :] < lengths[:, None]


@contextmanager
def padding_masked(transformer: torch.nn.Module, valid: Optional[torch.Tensor]) -> Iterator[None]:
    """Within the block, the DiT's self-attention ignores the padded patches of `valid` [B, frames]."""
    processor = getattr(transformer, "padding_processor", None)
    if valid is None:
        yield
        return
    if processor is None:
        processor = install(transformer)
    patch = int(transformer.config.patch_size)
    frames = valid.shape[1]
    padded = (-frames) % patch
    patches = torch.nn.functional.pad(valid, (0, padded)).view(valid.shape[0], -1, patch).any(dim=-1)
    processor.key_valid = patches
    try:
        yield
    finally:
        processor.key_valid = None


def dit_forward(transformer: torch.nn.Module, valid: Optional[torch.Tensor], hidden_states: torch.Tensor,
                context_latents: torch.Tensor, **kwargs) -> torch.Tensor:
    """One DiT call that leaves the padded frames of `valid` out of every item's result."""
    if valid is not None:
        keep = valid[..., None]
        hidden_states = torch.where(keep, hidden_states, 0.0)
        context_latents = torch.where(keep, context_latents, 0.0)
    with padding_masked(transformer, valid):
        return transformer(hidden_states=hidden_states, context_latents=context_latents, return_dict=False, **kwargs)[0]
