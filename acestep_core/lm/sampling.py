"""LM sampling settings and the logits → token operations, all on device (no host sync)."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Optional

import torch

from ..errors import InputError
from ..memory.dtypes import is_x86
from .constants import DEFAULT_NEGATIVE_PROMPT


@dataclass
class LMSampling:
    """Official names and defaults (`GenerationParams`): temperature 0 means greedy."""

    temperature: float = 0.85
    cfg_scale: float = 2.0
    top_k: int = 0
    top_p: float = 0.9
    repetition_penalty: float = 1.0
    negative_prompt: str = DEFAULT_NEGATIVE_PROMPT
    seed: int = -1

    def validate(self) -> None:
        for name in ("temperature", "cfg_scale", "top_p", "repetition_penalty"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InputError(f"lm {name.replace('_', ' ')} must be a finite number, got {value!r}")
        if self.temperature < 0:
            raise InputError(f"lm temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.cfg_scale < 1.0 and self.cfg_scale != 0:
            raise InputError(f"lm cfg scale must be >= 1.0 (1 = no CFG), got {self.cfg_scale}")
        if self.top_k < 0:
            raise InputError(f"lm top-k must be >= 0 (0 = off), got {self.top_k}")
        if not 0.0 <= self.top_p <= 1.0:
            raise InputError(f"lm top-p must be in [0, 1] (1 or 0 = off), got {self.top_p}")
        if self.repetition_penalty <= 0:
            raise InputError(f"lm repetition penalty must be > 0, got {self.repetition_penalty}")

    def resolved_seed(self) -> int:
        """The seed actually used: -1 draws a random 32-bit seed."""
        if self.seed is None or self.seed < 0:
            return random.SystemRandom().randint(0, 2**32 - 1)
        return int(self.seed) & 0xFFFFFFFF


def apply_repetition_penalty(scores: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """transformers' RepetitionPenaltyLogitsProcessor on a boolean `seen` mask of the same shape."""
    if penalty == 1.0:
        return scores
    penalised = torch.where(scores < 0, scores * penalty, scores / penalty)
    return torch.where(seen, penalised, scores)


def top_k_filter(scores: torch.Tensor, top_k: Optional[int]) -> torch.Tensor:
    if top_k and top_k > 0 and top_k < scores.shape[-1]:
        kth = torch.topk(scores, top_k, dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    return scores


def sort_descending(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`scores` [..., V] sorted high to low along the last dim, and where each value came from.

    On a CPU, float32 scores are sorted as integers: the float bits, flipped so that integer order
    is float order, go through torch's stable integer sort, which is a radix sort (64 000 codes:
    about 1 ms instead of 4.4 ms for the float sort, 217 204 tokens 6 ms instead of 18 ms, one
    thread). The values come out exactly as the float sort gives them; equal values keep their
    index order (the float sort leaves ties in no defined order), and -0.0 sorts just below 0.0.
    x86 only: torch's radix sort comes with FBGEMM, which its x86 builds ship."""
    if (scores.device.type != "cpu" or scores.dtype != torch.float32 or scores.shape[-1] < 2
            or not is_x86()):
        return torch.sort(scores, descending=True, dim=-1)
    bits = scores.contiguous().view(torch.int32)
    # Negative floats order backwards as integers: flipping their 31 low bits puts them in order,
    # and the bitwise not makes ascending integer order descending float order.
    keys = ~torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    rows = keys.reshape(-1, keys.shape[-1])
    order = torch.stack([torch.sort(row, stable=True).indices for row in rows]).view(scores.shape)
    return scores.gather(-1, order), order


def top_p_filter(scores: torch.Tensor, top_p: Optional[float]) -> torch.Tensor:
    if top_p is not None and 0.0 < top_p < 1.0:
        sorted_logits, sorted_idx = sort_descending(scores)
        cum = torch.cumsum(torch.softmax(sorted_logits.float(), dim=-1), dim=-1)
        remove = cum > top_p
        remove[..., 1:] = remove[..., :-1].clone()
        remove[..., 0] = False
        scores = scores.masked_fill(remove.scatter(-1, sorted_idx, remove), float("-inf"))
    return scores


def sample(scores: torch.Tensor, sampling: LMSampling, generator: Optional[torch.Generator]) -> torch.Tensor:
    """top-k → top-p → temperature softmax → multinomial (argmax at temperature 0). Returns [B] ids."""
    scores = top_k_filter(scores, sampling.top_k)
    scores = top_p_filter(scores, sampling.top_p)
    if sampling.temperature > 0:
        probs = torch.softmax(scores.float() / sampling.temperature, dim=-1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    return torch.argmax(scores, dim=-1)


def top2_margin(scores: torch.Tensor) -> torch.Tensor:
    """Gap between the two largest logits (inf when only one token is allowed)."""
    top = torch.topk(scores, 2, dim=-1).values
    return torch.where(torch.isfinite(top[..., 1]), top[..., 0] - top[..., 1], torch.full_like(top[..., 0], float("inf")))
