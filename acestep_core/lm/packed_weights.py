"""bfloat16 LM weights in oneDNN's blocked layout, for the one-token steps on the CPU.

A one-token step multiplies one or two activation rows by every weight of the LM. On a CPU with
native bfloat16, oneDNN streams a weight it has reordered into its own blocked layout 1.2-1.6x faster
than the plain row-major weight (the 0.6B LM's 197 weights: 85 ms instead of 111 ms per CFG step on
one thread of an AVX512-BF16 EPYC). The reordered copy is as large as the weights it covers, and
making it takes about a second per GB. Weights that multiply the same activations are packed as one
matrix (a layer's q, k and v projections; its gate and up projections): one longer weight streams
faster than several short ones (a CFG step on an AMX Xeon 5-7% faster, one thread or two), and each
output column is the same dot product either way. The copy is made:

- only for a bfloat16 LM on a CPU with native bf16, and only for a loop of at least `MIN_STEPS`
  steps (fewer would not earn the reorder back);
- only while the RAM left after it stays above 2 GB or 15 % of RAM (`memory.policy.spare_ram`: it
  never pushes the machine into swap);
- only where, for every group of weight shapes, the packed product gives the bits of the plain
  products for one and two rows, so the layout changes the speed only, never a token (checked once
  per process);

and it is dropped when the decoding session that made it ends, so its memory is back before the DiT
runs. `ACESTEP_LM_PACKED_WEIGHTS=0` turns it off.
"""

from __future__ import annotations

import logging
import time
from typing import Iterable, Optional, Sequence

import torch

from ..switches import env_flag

logger = logging.getLogger(__name__)

ENV = "ACESTEP_LM_PACKED_WEIGHTS"
MIN_STEPS = 64          # one-token steps a loop must run for the reorder to pay for itself
MAX_ROWS = 8            # activation rows up to which the packed weights are used

# Per process: the weight groups' shapes ((out, ...), in) whose layouts were checked and agreed;
# `_layouts_differ` is True once any disagreed.
_checked_shapes: set[tuple[tuple[int, ...], int]] = set()
_layouts_differ = False


def packing_enabled() -> bool:
    """`ACESTEP_LM_PACKED_WEIGHTS`: unset / `auto` / `1` pack where it fits, `0` never."""
    return env_flag(ENV, True, "set 0 to turn the packed LM weights off, or 'auto' (or leave it unset) to "
                    "pack them where the CPU and the free RAM allow")


def _reorder(weight: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), 2)


def _packed_linear(x: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")


def _available_ram() -> tuple[int, int]:
    from ..memory.policy import system_ram

    return system_ram()


def _fits(nbytes: int) -> bool:
    from ..memory.policy import spare_ram

    total, available = _available_ram()
    return total > 0 and spare_ram(total, available) >= nbytes


def group_shape(group: Sequence[torch.Tensor]) -> tuple[tuple[int, ...], int]:
    """((out features of each weight), in features) of a group packed as one matrix."""
    return tuple(w.shape[0] for w in group), group[0].shape[1]


def _layouts_agree(groups: list[tuple[torch.Tensor, ...]], packed: list[torch.Tensor]) -> bool:
    """The packed product gives the plain products' bits for 1 and 2 rows, on one group of every
    shape not yet checked."""
    global _layouts_differ
    gen = torch.Generator().manual_seed(0)
    for group, pack in zip(groups, packed):
        shape = group_shape(group)
        if shape in _checked_shapes:
            continue
        for rows in (1, 2):
            x = torch.randn(rows, shape[1], generator=gen).to(group[0].dtype)
            plain = torch.cat([torch.nn.functional.linear(x, w) for w in group], dim=-1)
            if not torch.equal(plain, _packed_linear(x, pack)):
                _layouts_differ = True
                return False
        _checked_shapes.add(shape)
    return True


def eligible(weight: torch.Tensor, steps: int) -> bool:
    """Whether a loop of `steps` one-token steps over weights like `weight` should pack them."""
    if steps < MIN_STEPS or _layouts_differ:
        return False
    if weight.device.type != "cpu" or weight.dtype != torch.bfloat16:
        return False
    if not (torch.backends.mkldnn.is_available() and packing_enabled()):
        return False
    from ..memory.dtypes import cpu_has_native_bf16

    return cpu_has_native_bf16()


class PackedWeights:
    """Reordered copies of groups of weights, looked up by the plain weights they stand for."""

    def __init__(self, groups: dict[tuple[int, ...], tuple[tuple[torch.Tensor, ...], torch.Tensor]], nbytes: int):
        self._groups = groups
        self.nbytes = nbytes

    @classmethod
    def build(cls, groups: Iterable[Sequence[torch.Tensor]]) -> Optional["PackedWeights"]:
        """The packed copies of `groups` (each a sequence of weights [out_i, in] with one `in`, packed
        as one matrix), or None where RAM, oneDNN or the bit check says no (logged)."""
        global _layouts_differ
        groups = list({tuple(id(w) for w in g): tuple(g) for g in groups}.values())
        if any(len({w.shape[1] for w in g}) != 1 for g in groups):
            raise ValueError("every weight of a packed group must take the same input features")
        nbytes = sum(w.numel() * w.element_size() for g in groups for w in g)
        if not _fits(nbytes):
            logger.info("LM weights not packed: %.2f GB more would leave too little free RAM", nbytes / 1e9)
            return None
        start = time.perf_counter()
        try:
            packed = [_reorder(g[0] if len(g) == 1 else torch.cat(g)) for g in groups]
            agree = _layouts_agree(groups, packed)
        except RuntimeError as exc:  # a torch / oneDNN build without these bf16 kernels
            logger.info("LM weights not packed: oneDNN cannot reorder them here (%s)", exc)
            _layouts_differ = True
            return None
        if not agree:
            logger.info("LM weights not packed: oneDNN's blocked layout gives other bits on this CPU")
            return None
        logger.debug("packed %.2f GB of LM weights in %.2f s", nbytes / 1e9, time.perf_counter() - start)
        return cls({tuple(id(w) for w in g): (g, p) for g, p in zip(groups, packed)}, nbytes)

    def linear(self, x: torch.Tensor, *weights: torch.Tensor) -> Optional[tuple[torch.Tensor, ...]]:
        """`x @ w.T` for each of `weights` through their packed copy (views of one product), or None
        where `weights` were not packed as one group."""
        entry = self._groups.get(tuple(id(w) for w in weights))
        if entry is None or any(a is not b for a, b in zip(entry[0], weights)):
            return None
        flat = x.reshape(-1, x.shape[-1]).contiguous()
        out = _packed_linear(flat, entry[1])
        out = out.view(*x.shape[:-1], out.shape[-1])
        return out.split([w.shape[0] for w in weights], dim=-1) if len(weights) > 1 else (out,)
