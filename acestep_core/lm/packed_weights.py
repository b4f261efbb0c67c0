"""bfloat16 LM weights in oneDNN's blocked layout, for the one-token steps on the CPU.

A one-token step multiplies one or two activation rows by every weight of the LM. On a CPU with
native bfloat16, oneDNN streams a weight it has reordered into its own blocked layout 1.2-1.6x faster
than the plain row-major weight (the 0.6B LM's 197 weights: 85 ms instead of 111 ms per CFG step on
one thread of an AVX512-BF16 EPYC). The reordered copy is as large as the weights it covers, and
making it takes about a second per GB, so it is made:

- only for a bfloat16 LM on a CPU with native bf16, and only for a loop of at least `MIN_STEPS`
  steps (fewer would not earn the reorder back);
- only while the RAM left after it stays above `RAM_RESERVE` (it never pushes the machine into swap);
- only where, for every weight shape, both layouts give bit-identical products for one and two rows,
  so the layout changes the speed only, never a token (checked once per process);

and it is dropped when the decoding session that made it ends, so its memory is back before the DiT
runs. `ACESTEP_LM_PACKED_WEIGHTS=0` turns it off.
"""

from __future__ import annotations

import logging
import time
from typing import Iterable, Optional

import torch

from ..switches import env_flag

logger = logging.getLogger(__name__)

ENV = "ACESTEP_LM_PACKED_WEIGHTS"
MIN_STEPS = 64          # one-token steps a loop must run for the reorder to pay for itself
MAX_ROWS = 8            # activation rows up to which the packed weights are used
RAM_RESERVE = 2 << 30   # bytes of RAM that must stay available after packing (or 15% of RAM if more)

# Per process: the weight shapes whose layouts were checked and agreed; False once any disagreed.
_checked_shapes: set[tuple[int, int]] = set()
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
    total, available = _available_ram()
    reserve = max(RAM_RESERVE, int(0.15 * total))
    return total > 0 and available - nbytes >= reserve


def _layouts_agree(weights: list[torch.Tensor], packed: list[torch.Tensor]) -> bool:
    """Both layouts give the same bits for 1 and 2 rows, on one weight of every shape not yet checked."""
    global _layouts_differ
    gen = torch.Generator().manual_seed(0)
    for weight, pack in zip(weights, packed):
        shape = tuple(weight.shape)
        if shape in _checked_shapes:
            continue
        for rows in (1, 2):
            x = torch.randn(rows, shape[1], generator=gen).to(weight.dtype)
            if not torch.equal(torch.nn.functional.linear(x, weight), _packed_linear(x, pack)):
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
    """Reordered copies of `weights`, looked up by the plain weight they stand for."""

    def __init__(self, pairs: dict[int, tuple[torch.Tensor, torch.Tensor]], nbytes: int):
        self._pairs = pairs
        self.nbytes = nbytes

    @classmethod
    def build(cls, weights: Iterable[torch.Tensor]) -> Optional["PackedWeights"]:
        """The packed copies, or None where RAM, oneDNN or the bit check says no (logged)."""
        global _layouts_differ
        weights = list({id(w): w for w in weights}.values())
        nbytes = sum(w.numel() * w.element_size() for w in weights)
        if not _fits(nbytes):
            logger.info("LM weights not packed: %.2f GB more would leave too little free RAM", nbytes / 1e9)
            return None
        start = time.perf_counter()
        try:
            packed = [_reorder(w) for w in weights]
            agree = _layouts_agree(weights, packed)
        except RuntimeError as exc:  # a torch / oneDNN build without these bf16 kernels
            logger.info("LM weights not packed: oneDNN cannot reorder them here (%s)", exc)
            _layouts_differ = True
            return None
        if not agree:
            logger.info("LM weights not packed: oneDNN's blocked layout gives other bits on this CPU")
            return None
        logger.debug("packed %.2f GB of LM weights in %.2f s", nbytes / 1e9, time.perf_counter() - start)
        return cls({id(w): (w, p) for w, p in zip(weights, packed)}, nbytes)

    def linear(self, x: torch.Tensor, weight: torch.Tensor) -> Optional[torch.Tensor]:
        """`x @ weight.T` through the packed copy of `weight`; None where there is none."""
        pair = self._pairs.get(id(weight))
        if pair is None or pair[0] is not weight:
            return None
        flat = x.reshape(-1, x.shape[-1]).contiguous()
        return _packed_linear(flat, pair[1]).view(*x.shape[:-1], weight.shape[0])
