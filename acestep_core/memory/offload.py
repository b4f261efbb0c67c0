"""Keep idle components on the CPU and move each to the compute device only while it is used."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn


class OffloadManager:
    """`with manager.use("dit", module):` puts `module` on the compute device for the block.

    With offload off every component simply stays on the device.
    """

    def __init__(self, device: torch.device | str, offload_to_cpu: bool = False, offload_dit_to_cpu: bool = False):
        self.device = torch.device(device)
        self.offload_to_cpu = offload_to_cpu
        self.offload_dit_to_cpu = offload_dit_to_cpu

    def should_offload(self, name: str) -> bool:
        if self.device.type == "cpu":
            return False
        if name == "dit":
            return self.offload_dit_to_cpu
        return self.offload_to_cpu

    def place(self, name: str, module: nn.Module) -> nn.Module:
        """Initial placement right after loading."""
        return module.to("cpu" if self.should_offload(name) else self.device)

    @contextlib.contextmanager
    def use(self, name: str, module: nn.Module) -> Iterator[nn.Module]:
        offload = self.should_offload(name)
        if offload:
            module.to(self.device)
        try:
            yield module
        finally:
            if offload:
                module.to("cpu")
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
