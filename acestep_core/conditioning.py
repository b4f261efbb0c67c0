"""Text, lyric and timbre conditioning → the packed cross-attention sequence (docs/architecture.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .dit import DiTModel
from .prompts import caption_prompt, lyrics_prompt
from .text_encoder import TextEncoder


@dataclass
class TextInputs:
    """What the text encoder produced for one batch (kept so a second condition can reuse lyrics)."""

    caption_hidden: torch.Tensor
    caption_mask: torch.Tensor
    lyric_embeddings: torch.Tensor
    lyric_mask: torch.Tensor
    caption_ids: torch.Tensor
    lyric_ids: torch.Tensor


@dataclass
class Condition:
    encoder_hidden_states: torch.Tensor  # [B, L, H] before the DiT's condition_embedder
    encoder_attention_mask: torch.Tensor
    context_latents: torch.Tensor  # [B, T, 128] = [src_latents, chunk_mask]

    def with_null(self, null_condition_emb: torch.Tensor) -> "Condition":
        """Batch [conditional; unconditional] for guidance: the null embedding over every position."""
        null = null_condition_emb.to(self.encoder_hidden_states).expand_as(self.encoder_hidden_states)
        return Condition(
            encoder_hidden_states=torch.cat([self.encoder_hidden_states, null], dim=0),
            encoder_attention_mask=torch.cat([self.encoder_attention_mask, self.encoder_attention_mask], dim=0),
            context_latents=torch.cat([self.context_latents, self.context_latents], dim=0),
        )


def encode_texts(
    text_encoder: TextEncoder,
    instruction: str,
    captions: list[str],
    metas: list[str],
    lyrics: list[str],
    languages: list[str],
    device,
    dtype,
) -> TextInputs:
    caption_prompts = [caption_prompt(instruction, c, m) for c, m in zip(captions, metas)]
    lyric_prompts = [lyrics_prompt(l, lang) for l, lang in zip(lyrics, languages)]
    caption_hidden, caption_mask, caption_ids = text_encoder.encode_captions(caption_prompts, device, dtype)
    lyric_embeddings, lyric_mask, lyric_ids = text_encoder.embed_lyrics(lyric_prompts, device, dtype)
    return TextInputs(caption_hidden, caption_mask, lyric_embeddings, lyric_mask, caption_ids, lyric_ids)


def encode_caption_only(text_encoder: TextEncoder, instruction, captions, metas, device, dtype):
    prompts = [caption_prompt(instruction, c, m) for c, m in zip(captions, metas)]
    return text_encoder.encode_captions(prompts, device, dtype)


def timbre_inputs(
    dit: DiTModel,
    batch_size: int,
    reference_latents: Optional[list[Optional[torch.Tensor]]],
    device,
    dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed timbre references [N, 750, 64] and the batch index of each; silence when none is given."""
    fix_frames = int(dit.config.get("timbre_fix_frame", 750))
    silence = dit.silence_latent[:, :fix_frames].to(device=device, dtype=dtype)
    packed, order = [], []
    for i in range(batch_size):
        ref = reference_latents[i] if reference_latents else None
        packed.append(silence[0] if ref is None else ref.to(device=device, dtype=dtype))
        order.append(i)
    return torch.stack(packed), torch.tensor(order, device=device, dtype=torch.long)


@torch.no_grad()
def encode_condition(
    dit: DiTModel,
    texts: TextInputs,
    caption_hidden: Optional[torch.Tensor],
    caption_mask: Optional[torch.Tensor],
    refer_packed: torch.Tensor,
    refer_order: torch.Tensor,
    src_latents: torch.Tensor,
    chunk_mask: torch.Tensor,
) -> Condition:
    """Condition encoder (lyrics → timbre → caption packing) and the DiT context latents."""
    caption_hidden = texts.caption_hidden if caption_hidden is None else caption_hidden
    caption_mask = texts.caption_mask if caption_mask is None else caption_mask
    encoder_hidden_states, encoder_attention_mask = dit.condition_encoder(
        text_hidden_states=caption_hidden,
        text_attention_mask=caption_mask,
        lyric_hidden_states=texts.lyric_embeddings,
        lyric_attention_mask=texts.lyric_mask,
        refer_audio_acoustic_hidden_states_packed=refer_packed,
        refer_audio_order_mask=refer_order,
    )
    mask_channels = chunk_mask.to(src_latents.dtype).unsqueeze(-1).expand(-1, -1, src_latents.shape[-1])
    context_latents = torch.cat([src_latents, mask_channels], dim=-1)
    return Condition(encoder_hidden_states, encoder_attention_mask, context_latents)
