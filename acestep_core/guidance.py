"""Adaptive projected guidance (APG) as the official base/SFT sampler applies it (docs/sampling.md#apg-guidance)."""

from __future__ import annotations

from typing import Optional

import torch

APG_MOMENTUM = -0.75
APG_NORM_THRESHOLD = 2.5
APG_ETA = 0.0


class MomentumBuffer:
    """Running average of guidance differences, carried across the steps of one generation."""

    def __init__(self, momentum: float = APG_MOMENTUM):
        self.momentum = momentum
        self.running_average: torch.Tensor | float = 0.0

    def update(self, value: torch.Tensor) -> torch.Tensor:
        self.running_average = value + self.momentum * self.running_average
        return self.running_average


def _project(v0: torch.Tensor, v1: torch.Tensor, dims) -> tuple[torch.Tensor, torch.Tensor]:
    dtype = v0.dtype
    v0, v1 = v0.double(), v1.double()
    v1 = torch.nn.functional.normalize(v1, dim=dims)
    parallel = (v0 * v1).sum(dim=dims, keepdim=True) * v1
    orthogonal = v0 - parallel
    return parallel.to(dtype), orthogonal.to(dtype)


def apg(
    pred_cond: torch.Tensor,
    pred_uncond: torch.Tensor,
    guidance_scale: float,
    momentum_buffer: Optional[MomentumBuffer],
    eta: float = APG_ETA,
    norm_threshold: float = APG_NORM_THRESHOLD,
    dims=(1,),
    valid: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Guided velocity; `dims=(1,)` is the time axis of [B, T, 64]. With `valid` [B, T] (an item's own
    frames), the norm and the projection are measured over those frames only, so padding cannot
    steer an item's guidance."""
    diff = pred_cond - pred_uncond
    if momentum_buffer is not None:
        diff = momentum_buffer.update(diff)
    own = None if valid is None else valid[..., None].to(diff.dtype)
    if norm_threshold > 0:
        norm = (diff if own is None else diff * own).norm(p=2, dim=list(dims), keepdim=True)
        diff = diff * torch.minimum(torch.ones_like(norm), norm_threshold / norm)
    parallel, orthogonal = _project(diff, pred_cond if own is None else pred_cond * own, list(dims))
    return pred_cond + (guidance_scale - 1) * (orthogonal + eta * parallel)
