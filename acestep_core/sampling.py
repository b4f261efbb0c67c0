"""The denoising loop of the official turbo and base/SFT samplers (docs/sampling.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from .conditioning import Condition
from .dit_speed import cross_kv_cached
from .errors import CancelledError
from .guidance import MomentumBuffer, adg, apg
from .latent_mask import dit_forward
from .repaint import RepaintGuide  # noqa: F401 (re-exported)

ProgressFn = Callable[[int, int], None]
CancelFn = Callable[[], bool]


@dataclass
class SamplerSettings:
    timesteps: torch.Tensor  # in the model dtype, ending with 0
    guidance_scale: float = 1.0
    cfg_interval_start: float = 0.0
    cfg_interval_end: float = 1.0
    infer_method: str = "ode"
    is_turbo: bool = True
    use_adg: bool = False  # ADG instead of APG where guidance applies
    cover_steps: Optional[int] = None  # steps run on the cover condition before switching

    @property
    def num_steps(self) -> int:
        return self.timesteps.shape[0] - 1

    @property
    def guided(self) -> bool:
        return (not self.is_turbo) and self.guidance_scale > 1.0

    def sde_next_t(self, step: int) -> float:
        # Base/SFT re-noise with the unshifted grid (as the reference does); turbo uses its table.
        if self.is_turbo:
            return float(self.timesteps[step + 1])
        return 1.0 - (step + 1) / self.num_steps


def _in_interval(t: torch.Tensor, start: float, end: float) -> bool:
    t32 = t.float()
    return bool(start <= t32 <= end) if isinstance(start, float) else bool((t32 >= start) & (t32 <= end))


@torch.no_grad()
def denoise(
    transformer: torch.nn.Module,
    noise: torch.Tensor,
    condition: Condition,
    settings: SamplerSettings,
    null_condition_emb: Optional[torch.Tensor] = None,
    non_cover_condition: Optional[Condition] = None,
    repaint: Optional[RepaintGuide] = None,
    generators: Optional[list[torch.Generator]] = None,
    progress: Optional[ProgressFn] = None,
    cancel: Optional[CancelFn] = None,
    on_step: Optional[Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None]] = None,
    start: Optional[torch.Tensor] = None,
    valid: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Integrate from the first timestep to a clean latent (t = 0); returns [B, T, 64].

    `start` replaces `noise` as the starting point (the source re-noised to the first timestep, for
    cover_noise_strength); repaint injection still follows `noise`. `valid` [B, T] (True = the item's
    own frame) hides padded frames from the DiT's self-attention."""
    x = noise if start is None else start
    batch = x.shape[0]
    dtype = x.dtype
    momentum = MomentumBuffer() if settings.guided and not settings.use_adg else None
    guided_condition = condition.with_null(null_condition_emb) if settings.guided else None
    guided_non_cover = (
        non_cover_condition.with_null(null_condition_emb) if settings.guided and non_cover_condition is not None else None
    )
    guided_valid = torch.cat([valid, valid], dim=0) if valid is not None and settings.guided else None
    steps = settings.num_steps
    # The condition's projections inside the DiT are computed once for the whole loop.
    with cross_kv_cached(transformer):
        for i in range(steps):
            if cancel is not None and cancel():
                raise CancelledError("generation cancelled")
            t_cur, t_next = settings.timesteps[i], settings.timesteps[i + 1]
            use_non_cover = non_cover_condition is not None and settings.cover_steps is not None and i >= settings.cover_steps
            cond = non_cover_condition if use_non_cover else condition
            apply_guidance = settings.guided and _in_interval(t_cur, settings.cfg_interval_start, settings.cfg_interval_end)

            if apply_guidance:
                both = guided_non_cover if use_non_cover else guided_condition
                x_in = torch.cat([x, x], dim=0)
                t_in = t_cur * torch.ones((2 * batch,), device=x.device, dtype=dtype)
                out = dit_forward(transformer, guided_valid, x_in, both.context_latents, timestep=t_in, timestep_r=t_in,
                                  encoder_hidden_states=both.encoder_hidden_states)
                v_cond, v_uncond = out[:batch], out[batch:]
                if settings.use_adg:
                    v = adg(x, v_cond, v_uncond, t_cur, settings.guidance_scale)
                else:
                    v = apg(v_cond, v_uncond, settings.guidance_scale, momentum, valid=valid)
            else:
                t_in = t_cur * torch.ones((batch,), device=x.device, dtype=dtype)
                out = dit_forward(transformer, valid, x, cond.context_latents, timestep=t_in, timestep_r=t_in,
                                  encoder_hidden_states=cond.encoder_hidden_states)
                v = out
            if on_step is not None:
                on_step(i, x, out, v)

            if settings.infer_method == "sde":
                x0 = x - v * t_cur
                if i == steps - 1:
                    x = x0
                else:
                    t_n = settings.sde_next_t(i)
                    fresh = _randn_like(x, generators)
                    x = t_n * fresh + (1 - t_n) * x0
            else:
                x = x - v * (t_cur - t_next)

            if repaint is not None:
                x = repaint.inject(x, i, t_next, noise)
            if progress is not None:
                progress(i + 1, steps)
    return x


def _randn_like(x: torch.Tensor, generators: Optional[list[torch.Generator]]) -> torch.Tensor:
    if not generators:
        return torch.randn_like(x)
    rows = [torch.randn((1, *x.shape[1:]), generator=g, device=x.device, dtype=x.dtype) for g in generators]
    return torch.cat(rows, dim=0)


def prepare_noise(seeds: list[int], frames: int, channels: int, device, dtype) -> tuple[torch.Tensor, list[torch.Generator]]:
    """One generator per batch item, seeded with that item's seed; noise drawn in the model dtype on the device."""
    generators, rows = [], []
    for seed in seeds:
        g = torch.Generator(device=device).manual_seed(int(seed))
        rows.append(torch.randn((1, frames, channels), generator=g, device=device, dtype=dtype))
        generators.append(g)
    return torch.cat(rows, dim=0), generators
