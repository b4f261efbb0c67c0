"""The guidance of the official base/SFT sampler: adaptive projected guidance (APG, the default) and
angle-based dynamic guidance (ADG, `use_adg`) (docs/sampling.md#apg-guidance, docs/sampling.md#adg-guidance)."""

from __future__ import annotations

from typing import Optional

import torch

APG_MOMENTUM = -0.75
APG_NORM_THRESHOLD = 2.5
APG_ETA = 0.0
# The official ADG clips the guided angle at 3.14 / 6 (written with 3.14, not pi).
ADG_ANGLE_CLIP = 3.14 / 6
ADG_EPS = 1e-3  # below this sin(theta) the rotation falls back to a linear step; also the weight floor


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


def adg(
    x: torch.Tensor,
    v_cond: torch.Tensor,
    v_uncond: torch.Tensor,
    t: torch.Tensor | float,
    guidance_scale: float,
    angle_clip: float = ADG_ANGLE_CLIP,
) -> torch.Tensor:
    """Angle-based dynamic guidance on the clean-latent estimates x0 = x - t v, frame by frame ([B, T, 64]):
    the conditional estimate is turned away from the unconditional one by (scale - 1) times the angle
    between them (clipped at ADG_ANGLE_CLIP); the guided velocity is (x - x0_guided) / t. No momentum,
    no renormalisation (the official default)."""
    batch, frames, channels = v_cond.shape
    t = torch.as_tensor(t, device=x.device, dtype=x.dtype).reshape(-1, 1, 1)
    weight = (guidance_scale - 1) * (guidance_scale > 1) + ADG_EPS
    x0_cond = x - t * v_cond
    x0_uncond = x - t * v_uncond
    # The angle in float64, the projection in float32, as the official code measures them.
    a, b = x0_cond.reshape(-1, channels).double(), x0_uncond.reshape(-1, channels).double()
    cos = ((a / a.norm(dim=1, keepdim=True)) * (b / b.norm(dim=1, keepdim=True))).sum(dim=1)
    theta = torch.acos(cos.clamp(-1 + 1e-6, 1 - 1e-6)).reshape(batch, frames, 1)
    guided = torch.clamp(weight * theta, -angle_clip, angle_clip)
    diff = (x0_cond - x0_uncond).float()
    base = x0_uncond.float()
    along = (diff * base).sum(-1, keepdim=True) / ((base * base).sum(-1, keepdim=True) + 1e-8) * base
    perpendicular = diff - along
    sin = torch.sin(theta)
    turned = torch.where(sin > ADG_EPS, (perpendicular * torch.sin(guided)) / sin, perpendicular * weight)
    x0_guided = torch.cos(guided) * x0_cond + turned
    return ((x - x0_guided) / t).to(x.dtype)
