"""Keep idle components on the CPU and move each to the compute device only while it is used.

With offload on, the pipeline runs its stages one after another (LM → text encoder → DiT → VAE)
inside `with manager.use(name, module):`, so the device holds one component plus its activations
at a time instead of the sum of all of them.
"""

from __future__ import annotations

import contextlib
import gc
from typing import Iterator

import torch
from torch import nn

# Component names that count as "the DiT" (ACESTEP_OFFLOAD_DIT_TO_CPU): the official DiT checkpoint
# holds the decoder together with the condition encoder, audio tokenizer and detokenizer.
DIT_COMPONENTS = frozenset({"dit", "transformer", "decoder", "condition_encoder", "audio_tokenizer",
                            "audio_token_detokenizer", "detokenizer"})


def empty_device_cache(device: torch.device | str) -> None:
    """Return cached allocator blocks to the driver so the next component can use them."""
    device_type = torch.device(device).type
    gc.collect()
    if device_type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif device_type == "mps" and getattr(torch.backends, "mps", None) is not None \
            and torch.backends.mps.is_available():
        torch.mps.empty_cache()
    elif device_type == "xpu" and hasattr(torch, "xpu") and torch.xpu.is_available():
        torch.xpu.empty_cache()


class OffloadManager:
    """`with manager.use("dit", module):` puts `module` on the compute device for the block.

    With offload off every component simply stays on the device. On a CPU device nothing moves.
    """

    def __init__(self, device: torch.device | str, offload_to_cpu: bool = False, offload_dit_to_cpu: bool = False):
        self.device = torch.device(device)
        self.offload_to_cpu = offload_to_cpu
        self.offload_dit_to_cpu = offload_dit_to_cpu

    def should_offload(self, name: str) -> bool:
        if self.device.type == "cpu":
            return False
        if name in DIT_COMPONENTS:
            return self.offload_dit_to_cpu
        return self.offload_to_cpu

    def home(self, name: str) -> torch.device:
        """Where `name` waits between uses."""
        return torch.device("cpu") if self.should_offload(name) else self.device

    def place(self, name: str, module: nn.Module) -> nn.Module:
        """Initial placement right after loading."""
        return module.to(self.home(name))

    @contextlib.contextmanager
    def use(self, name: str, module: nn.Module) -> Iterator[nn.Module]:
        offload = self.should_offload(name)
        if offload:
            module.to(self.device)
        try:
            yield module
        finally:
            if offload:
                # Also on errors (an OOM inside the block): the next attempt must start from a clean device.
                module.to("cpu")
                empty_device_cache(self.device)

    def describe(self) -> str:
        if self.device.type == "cpu" or not (self.offload_to_cpu or self.offload_dit_to_cpu):
            return f"all components on {self.device}"
        dit = "DiT offloaded too" if self.offload_dit_to_cpu else "DiT stays on the device"
        return f"idle components on the CPU, moved to {self.device} while used ({dit})"
