"""Decoding loops: the metadata loop driven by the state machine, and the code loop.

The code loop is the one users wait on (5 tokens per second of music). It runs a fixed number of
steps, exactly `target_codes` codes and then EOS, so nothing it computes has to come back to the
host until the end: cond and uncond rows decode as one batch, logits are projected on the code rows
only, CFG / penalty / top-k / top-p / sampling stay on device and the sampled token is written into a
preallocated buffer and fed straight back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from ..errors import CancelledError
from .constants import AUDIO_CODE_BASE, IM_END_ID, NUM_VALID_CODES, ENDOFTEXT_ID
from .constraints import MetadataFSM
from .model import StaticCacheDecoder
from .sampling import LMSampling, apply_repetition_penalty, sample, top2_margin

ProgressFn = Optional[Callable[[int, int], None]]
CancelFn = Optional[Callable[[], bool]]


@dataclass
class DecodeResult:
    prompt_ids: list[int]
    generated_ids: list[int]
    margins: list[float] = field(default_factory=list)


def left_pad(rows: list[list[int]], pad_id: int = ENDOFTEXT_ID) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids and attention mask, as the reference tokenizes the CFG pair."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row):] = 1
    return ids, mask


def _check(cancel: CancelFn) -> None:
    if cancel is not None and cancel():
        raise CancelledError("LM generation cancelled")


def _cfg(logits: torch.Tensor, scale: float) -> torch.Tensor:
    if logits.shape[0] == 1:
        return logits[0]
    cond, uncond = logits[0].float(), logits[1].float()
    out = uncond + scale * (cond - uncond)
    return torch.nan_to_num(out, nan=float("-inf"))


def _prefill(decoder: StaticCacheDecoder, rows: list[list[int]], new_tokens: int):
    """Left-pad the rows, size the cache for `new_tokens` more, run the prompt in one pass.

    Returns the first row's prompt ids (padding dropped, on the device), the batch, the prompt width
    and the last position's hidden state [B, H]."""
    ids, mask = left_pad(rows)
    ids, mask = ids.to(decoder.device), mask.to(decoder.device)
    batch, start = ids.shape
    decoder.reset(batch, start + new_tokens)
    hidden = decoder.forward(ids, 0, mask, last_only=True)[:, -1]
    return ids[0][mask[0].bool()], batch, start, hidden


@torch.inference_mode()
def decode_with_fsm(
    decoder: StaticCacheDecoder,
    rows: list[list[int]],
    fsm: MetadataFSM,
    sampling: LMSampling,
    max_new_tokens: int,
    generator: Optional[torch.Generator],
    cfg_scale: float = 1.0,
    progress: ProgressFn = None,
    cancel: CancelFn = None,
    record_margins: bool = False,
) -> DecodeResult:
    """Token-by-token loop for CoT / format / sample / understand (the FSM needs each token on host)."""
    prompt, batch, start, hidden = _prefill(decoder, rows, max_new_tokens + 1)
    seen = None
    if sampling.repetition_penalty != 1.0:
        seen = torch.zeros(decoder.embed.weight.shape[0], dtype=torch.bool, device=decoder.device)
        seen[prompt] = True
    generated: list[int] = []
    margins: list[float] = []
    pos = start
    with decoder.decoding():
        for step in range(max_new_tokens):
            _check(cancel)
            cache: dict = {}

            def get_scores():
                if "s" not in cache:
                    cache["s"] = _cfg(decoder.full_logits(hidden), cfg_scale)
                return cache["s"]

            forced, scores = fsm.step(get_scores)
            if forced is not None:
                token = int(forced)
                if record_margins:
                    margins.append(float("inf"))
            else:
                if seen is not None:
                    scores = apply_repetition_penalty(scores, seen, sampling.repetition_penalty)
                if record_margins:
                    margins.append(float(top2_margin(scores)))
                token = int(sample(scores[None], sampling, generator)[0])
            fsm.update(token)
            generated.append(token)
            if progress is not None:
                progress(step + 1, max_new_tokens)
            if token in (IM_END_ID, ENDOFTEXT_ID) or step == max_new_tokens - 1:
                break
            if seen is not None:
                seen[token] = True
            hidden = decoder.decode(torch.full((batch, 1), token, dtype=torch.long, device=decoder.device), pos)
            pos += 1
    if progress is not None and len(generated) < max_new_tokens:
        progress(len(generated), len(generated))  # stopped early: the phase is complete
    return DecodeResult(prompt.tolist(), generated, margins)


@torch.inference_mode()
def decode_codes(
    decoder: StaticCacheDecoder,
    rows: list[list[int]],
    target_codes: int,
    sampling: LMSampling,
    generator: Optional[torch.Generator],
    cfg_scale: float = 1.0,
    progress: ProgressFn = None,
    cancel: CancelFn = None,
    record_margins: bool = False,
) -> DecodeResult:
    """Exactly `target_codes` audio codes then EOS; rows = [cond] or [cond, uncond] for CFG."""
    total = target_codes + 1
    prompt, batch, start, hidden = _prefill(decoder, rows, total)
    device = decoder.device
    # EOS is blocked until exactly `target_codes` codes and then forced, so the loop only ever
    # scores the 64 000 code rows and the final EOS is written up front.
    out = torch.empty(total, dtype=torch.long, device=device)
    out[-1] = IM_END_ID
    margin_buf = torch.full((total,), float("inf"), device=device) if record_margins else None
    seen = None
    if sampling.repetition_penalty != 1.0:
        seen = torch.zeros(NUM_VALID_CODES, dtype=torch.bool, device=device)
        seen[prompt[(prompt >= AUDIO_CODE_BASE) & (prompt < AUDIO_CODE_BASE + NUM_VALID_CODES)] - AUDIO_CODE_BASE] = True
    token = torch.empty((batch, 1), dtype=torch.long, device=device)  # fed back without leaving the device
    with decoder.decoding(steps=target_codes):
        for step in range(target_codes):
            _check(cancel)
            scores = _cfg(decoder.code_logits(hidden), cfg_scale)
            if seen is not None:
                scores = apply_repetition_penalty(scores, seen, sampling.repetition_penalty)
            if margin_buf is not None:
                margin_buf[step] = top2_margin(scores)
            column = sample(scores[None], sampling, generator)[0]
            if seen is not None:
                seen[column] = True
            out[step] = column + AUDIO_CODE_BASE
            if progress is not None:
                progress(step + 1, total)
            if step < target_codes - 1:
                token.copy_(out[step].expand(batch, 1))
                hidden = decoder.decode(token, start + step)
    if progress is not None:
        progress(total, total)
    margins = margin_buf.tolist() if margin_buf is not None else []
    return DecodeResult(prompt.tolist(), out.tolist(), margins)
