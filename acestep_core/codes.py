"""5 Hz semantic audio codes ↔ 25 Hz latent hints (FSQ + detokenizer; ACESTEP15.md §5)."""

from __future__ import annotations

import re
from typing import Iterable

import torch

from .dit import DiTModel

CODE_PATTERN = re.compile(r"<\|audio_code_(\d+)\|>")
MAX_CODE = 63999
FRAMES_PER_CODE = 5


def parse_audio_codes(text: str) -> list[int]:
    """Codes in an LM output string, clamped to the valid range as the reference does."""
    return [min(max(int(m), 0), MAX_CODE) for m in CODE_PATTERN.findall(text or "")]


def codes_from_any(value) -> list[int]:
    """Accept a `<|audio_code_N|>` string, a comma/space separated string of ints, or a list of ints."""
    if value is None:
        return []
    if isinstance(value, str):
        if "<|audio_code_" in value:
            return parse_audio_codes(value)
        parts = [p for p in re.split(r"[\s,]+", value.strip()) if p]
        if not parts:
            return []
        if not all(p.lstrip("-").isdigit() for p in parts):
            from .errors import InputError

            raise InputError(
                "audio_code_string must be '<|audio_code_N|>' tokens or a list of integers, "
                f"got {value[:60]!r}"
            )
        return [min(max(int(p), 0), MAX_CODE) for p in parts]
    return [min(max(int(c), 0), MAX_CODE) for c in value]


@torch.no_grad()
def codes_to_hints(dit: DiTModel, codes: Iterable[int], device, dtype) -> torch.Tensor:
    """[1, 5·n, 64] LM hints at 25 Hz."""
    indices = torch.tensor(list(codes), dtype=torch.long, device=device).view(1, -1, 1)
    quantized = dit.audio_tokenizer.quantizer.get_output_from_indices(indices).to(dtype)
    return dit.detokenizer(quantized)


@torch.no_grad()
def latents_to_codes(dit: DiTModel, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenize 25 Hz latents [B, T, 64] → (quantized [B, ceil(T/5), H], indices [B, ceil(T/5), 1])."""
    silence = dit.silence_latent.to(device=latents.device, dtype=latents.dtype)
    return dit.audio_tokenizer.tokenize(latents, silence_latent=silence)


@torch.no_grad()
def latents_to_hints(dit: DiTModel, latents: torch.Tensor) -> torch.Tensor:
    """The cover-from-audio bottleneck: tokenize → detokenize, cropped back to T frames."""
    quantized, _ = latents_to_codes(dit, latents)
    return dit.detokenizer(quantized)[:, : latents.shape[1]]


def codes_per_item(value, batch_size: int) -> list[list[int]]:
    """One code list per batch item. A list of code strings (or of int lists) gives each item its
    own codes (one entry = all items); anything else is one code list shared by every item."""
    from .errors import InputError

    per_item = isinstance(value, (list, tuple)) and value and all(isinstance(v, (str, list, tuple)) for v in value)
    if not per_item:
        return [codes_from_any(value)] * batch_size
    items = [codes_from_any(v) for v in value]
    if len(items) == 1:
        return items * batch_size
    if len(items) != batch_size:
        raise InputError(
            f"audio_code_string lists {len(items)} code strings for a batch of {batch_size}; "
            "give one per batch item, or a single one for all"
        )
    if any(items) and not all(items):
        raise InputError("audio_code_string: give codes for every batch item or for none")
    return items
