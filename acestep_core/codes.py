"""5 Hz semantic audio codes ↔ 25 Hz latent hints (docs/architecture.md#audio-codes-fsq-tokenizer-and-detokenizer)."""

from __future__ import annotations

import operator
import re
from typing import Iterable

import torch

from .dit import DiTModel
from .errors import InputError

CODE_PATTERN = re.compile(r"<\|audio_code_(\d+)\|>")
MAX_CODE = 63999
FRAMES_PER_CODE = 5
# The LM tokenizer has 65535 code tokens (<|audio_code_0|> .. <|audio_code_65534|>) of which the FSQ
# uses 0..63999. Like the official parser, codes the tokenizer has are clamped into the FSQ range;
# a bigger number is no code at all (a typo or garbage) and is refused instead of turned into 63999.
MAX_TOKEN_CODE = 65534
# 5 codes per second: the longest song (600 s) has 3000 codes.
MAX_CODES = 3000
_TOKEN_PREFIX = "<|audio_code_"


def _clamped(values: list[int], text_for_error) -> list[int]:
    bad = [v for v in values if v < 0 or v > MAX_TOKEN_CODE]
    if bad:
        raise InputError(f"audio code {bad[0]} is out of range: codes are 0..{MAX_CODE} "
                         f"({MAX_CODE + 1}..{MAX_TOKEN_CODE}, LM tokens outside the codebook, are clamped to {MAX_CODE}); "
                         f"got {text_for_error}")
    if len(values) > MAX_CODES:
        raise InputError(f"{len(values)} audio codes are {len(values) / 5:.0f} s of music; "
                         f"the limit is {MAX_CODES} codes (600 s)")
    return [min(v, MAX_CODE) for v in values]


def format_audio_codes(codes: Iterable[int]) -> str:
    """The <|audio_code_N|> string of `codes` (what `parse_audio_codes` reads back)."""
    return "".join(f"{_TOKEN_PREFIX}{int(c)}|>" for c in codes)


def parse_audio_codes(text: str) -> list[int]:
    """Codes in an LM output string, clamped to the valid range as the reference does."""
    text = text or ""
    tokens = CODE_PATTERN.findall(text)
    if text.count(_TOKEN_PREFIX) != len(tokens):
        start = next(m.start() for m in re.finditer(re.escape(_TOKEN_PREFIX), text)
                     if not CODE_PATTERN.match(text, m.start()))
        raise InputError(f"malformed audio code token {text[start:start + 30]!r}: write <|audio_code_N|> "
                         f"with N from 0 to {MAX_CODE}")
    return _clamped([int(m) for m in tokens], repr(text[:60]))


def codes_from_any(value) -> list[int]:
    """Accept a `<|audio_code_N|>` string, a comma/space separated string of ints, or a list of ints."""
    if value is None:
        return []
    if isinstance(value, str):
        if _TOKEN_PREFIX in value:
            return parse_audio_codes(value)
        parts = [p for p in re.split(r"[\s,]+", value.strip()) if p]
        if not parts:
            return []
        if not all(p.lstrip("-").isdigit() for p in parts):
            raise InputError(
                "audio_code_string must be '<|audio_code_N|>' tokens or a list of integers, "
                f"got {value[:60]!r}"
            )
        return _clamped([int(p) for p in parts], repr(value[:60]))
    values = []
    for c in value:
        if isinstance(c, bool):
            raise InputError(f"audio codes must be integers, got {c!r}")
        if isinstance(c, str) and c.strip().lstrip("-").isdigit():
            values.append(int(c))
            continue
        try:
            values.append(operator.index(c))  # ints, numpy / torch integers; not bools-as-text or 3.5
        except TypeError:
            if isinstance(c, float) and c.is_integer():
                values.append(int(c))
                continue
            raise InputError(f"audio codes must be integers, got {c!r}") from None
    return _clamped(values, repr(list(value)[:8]))


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
