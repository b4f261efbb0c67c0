"""OffloadManager: where each component lives, and that it moves only while used."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from acestep_core.memory.offload import OffloadManager
from acestep_core.memory.policy import GIB, DeviceMemory, decide


class RecordingModule(nn.Linear):
    """Records every device it is moved to, without needing that device."""

    def __init__(self):
        super().__init__(4, 4)
        self.moves: list[str] = []

    def to(self, *args, **kwargs):  # type: ignore[override]
        self.moves.append(str(torch.device(args[0] if args else kwargs["device"])))
        return self


def manager_for(gb: float, env=None) -> OffloadManager:
    decision = decide(DeviceMemory("cuda", "test", int(gb * GIB), int(gb * GIB)), env=env or {})
    # What ACEStepPipeline.from_pretrained builds from the settings loading.load_engine passes it.
    settings = decision.pipeline_kwargs()
    return OffloadManager("cuda:0", offload_to_cpu=settings["offload_to_cpu"],
                          offload_dit_to_cpu=settings["offload_dit_to_cpu"])


def test_decision_offload_follows_the_tiers():
    small, mid, big = manager_for(8), manager_for(16), manager_for(24)
    assert [small.should_offload(n) for n in ("lm", "text_encoder", "dit", "condition_encoder", "vae")] == [True] * 5
    assert [mid.should_offload(n) for n in ("lm", "text_encoder", "dit", "condition_encoder", "vae")] == \
        [True, True, False, False, True]
    assert not any(big.should_offload(n) for n in ("lm", "text_encoder", "dit", "vae"))
    assert "CPU" in small.describe() and "DiT stays" in mid.describe() and "all components" in big.describe()


def test_use_moves_in_and_back_out_even_on_error():
    manager = manager_for(8)
    module = RecordingModule()
    manager.place("dit", module)
    assert module.moves == ["cpu"]
    with manager.use("dit", module):
        assert module.moves[-1] == "cuda:0"
    assert module.moves == ["cpu", "cuda:0", "cpu"]
    with pytest.raises(torch.OutOfMemoryError):
        with manager.use("vae", module):
            raise torch.OutOfMemoryError("CUDA out of memory")
    assert module.moves[-2:] == ["cuda:0", "cpu"]


def test_resident_components_do_not_move():
    manager = manager_for(16)
    module = RecordingModule()
    manager.place("dit", module)
    with manager.use("dit", module):
        pass
    assert module.moves == ["cuda:0"]


def test_cpu_device_never_moves_anything():
    manager = OffloadManager("cpu", offload_to_cpu=True, offload_dit_to_cpu=True)
    module = nn.Linear(2, 2)
    with manager.use("lm", module) as used:
        assert used is module and next(module.parameters()).device.type == "cpu"
    assert not manager.should_offload("dit")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_offload_peak_is_the_largest_component_not_the_sum():
    device = torch.device("cuda")
    sizes = {"lm": 96, "text_encoder": 64, "dit": 128, "vae": 32}  # MiB of weights each
    modules = {n: nn.Linear(1024, mb * 256, bias=False) for n, mb in sizes.items()}  # fp32: 1 KiB/row
    peaks = {}
    for offload in (False, True):
        manager = OffloadManager(device, offload_to_cpu=offload, offload_dit_to_cpu=offload)
        for name, module in modules.items():
            manager.place(name, module)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        for name, module in modules.items():
            with manager.use(name, module), torch.no_grad():
                module(torch.ones(1, 1024, device=device))
        torch.cuda.synchronize()
        peaks[offload] = torch.cuda.max_memory_allocated() / 2**20
        for module in modules.values():
            module.to("cpu")
        torch.cuda.empty_cache()
    assert peaks[False] >= sum(sizes.values())
    assert max(sizes.values()) <= peaks[True] < max(sizes.values()) + 8
