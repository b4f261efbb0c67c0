"""What makes a DiT step cheaper without changing its arithmetic (docs/performance.md).

- `row_major_residual`: diffusers' DiT transposes the patch convolution's output back to
  [B, L, C] as a view, so the whole residual stream stays channel-major in memory and every linear
  layer gets a transposed input. float32 matrix products absorb that, but on the CPU a bfloat16
  linear with such an input falls back to a batched product that first copies its weight (the
  profile of a bfloat16 step was dominated by that copy). Laying the convolution output out
  row-major once per step makes every later activation contiguous.
- `cross_kv_cached`: the condition does not change between diffusion steps, so its projection into
  the DiT width and every cross-attention layer's keys and values are computed once per generation
  (the official sampler caches them too) instead of once per step.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn


def _row_major(_module: nn.Module, _args, output: torch.Tensor) -> torch.Tensor:
    # [B, C, L] with the memory of a contiguous [B, L, C]: the model's `.transpose(1, 2)` is then contiguous.
    return output.transpose(1, 2).contiguous().transpose(1, 2)


def row_major_residual(transformer: nn.Module) -> None:
    """Make the DiT's residual stream contiguous from the patch convolution on (idempotent)."""
    conv = transformer.proj_in_conv
    if not getattr(conv, "_acestep_row_major", False):
        conv.register_forward_hook(_row_major)
        conv._acestep_row_major = True


class _SameInputCache(nn.Module):
    """Wraps a module; while the same input tensor comes back unmodified, returns the first output
    instead of recomputing it."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self._key: torch.Tensor | None = None
        self._stamp = None
        self._value: torch.Tensor | None = None

    @staticmethod
    def _stamp_of(x: torch.Tensor):
        # An inference-mode tensor has no version counter: a copy of it tells an in-place change.
        return x.detach().clone() if x.is_inference() else x._version

    def _unchanged(self, x: torch.Tensor) -> bool:
        if x is not self._key:
            return False
        if isinstance(self._stamp, torch.Tensor):
            return torch.equal(x, self._stamp)
        return x._version == self._stamp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._unchanged(x):
            return self._value
        value = self.inner(x)
        # Holding the input keeps its id from being reused by another tensor.
        self._key, self._stamp, self._value = x, self._stamp_of(x), value
        return value


def _cacheable_sites(transformer: nn.Module) -> list[tuple[nn.Module, str]]:
    """(parent, attribute) of every module whose input is the condition alone."""
    sites: list[tuple[nn.Module, str]] = []
    if isinstance(getattr(transformer, "condition_embedder", None), nn.Module):
        sites.append((transformer, "condition_embedder"))
    for layer in getattr(transformer, "layers", ()):
        cross = getattr(layer, "cross_attn", None)
        if cross is not None:
            sites += [(cross, "to_k"), (cross, "to_v")]
    return sites


@contextmanager
def cross_kv_cached(transformer: nn.Module) -> Iterator[None]:
    """Within the block, the condition's projections are computed once for each condition tensor
    given to the DiT (a new condition tensor, e.g. the CFG pair or the cover switch, replaces the cached one)."""
    sites = [(parent, name, getattr(parent, name)) for parent, name in _cacheable_sites(transformer)]
    if any(isinstance(inner, _SameInputCache) for _, _, inner in sites):  # nested: the outer block caches
        yield
        return
    try:
        for parent, name, inner in sites:
            setattr(parent, name, _SameInputCache(inner))
        yield
    finally:
        for parent, name, inner in sites:
            setattr(parent, name, inner)
