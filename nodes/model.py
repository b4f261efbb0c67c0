"""The ACE15S_MODEL wire value: the engine pipeline, the optional LM planner and their patchers.

Each large component is wrapped in its own ComfyUI ModelPatcher so that ComfyUI's memory
manager sees it, can evict other models to make room for it, and can evict it in turn.
"""

from __future__ import annotations

import contextlib
import copy
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

from . import host


# One ACE-Step stage at a time in this process: graph runs and /acestep REST jobs (nodes/rest_routes.py)
# share the weights and ComfyUI's memory manager, so a stage that finds another running waits for it.
# Re-entrant: a stage may run another inside it on the same thread.
_STAGE_LOCK = threading.RLock()
STAGE_WAIT_POLL_S = 0.25


@contextlib.contextmanager
def one_stage_at_a_time(interruptible: bool = True):
    """Hold the stage lock; a graph run waiting for it still answers Cancel (`interruptible`)."""
    while not _STAGE_LOCK.acquire(timeout=STAGE_WAIT_POLL_S):
        if interruptible:
            host.raise_if_interrupted()
    try:
        yield
    finally:
        _STAGE_LOCK.release()


@dataclass
class LoadDecision:
    """What the loader decided and why (shown on the node and kept in saved metadata)."""

    dit: str
    vae: str
    text_encoder: str
    lm: str  # size or "none"
    offload: bool
    dtype: str
    device: str
    tier: Optional[str] = None
    reasons: list[str] = field(default_factory=list)
    lm_choice: str = "auto"  # the Load node's lm widget
    lm_off_reason: Optional[str] = None  # the memory decision's why, when no LM was loaded
    installed_lms: tuple = ()  # LM sizes found in ComfyUI's model folders

    def summary(self) -> str:
        lines = [
            f"DiT: {self.dit}",
            f"VAE: {self.vae}",
            f"Text encoder: {self.text_encoder}",
            f"LM: {self.lm}",
            f"Device: {self.device}  dtype: {self.dtype}  offload: {'on' if self.offload else 'off'}"
            + (f"  tier: {self.tier}" if self.tier else ""),
        ]
        lines += [f"- {r}" for r in self.reasons]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "dit": self.dit, "vae": self.vae, "text_encoder": self.text_encoder, "lm": self.lm,
            "offload": self.offload, "dtype": self.dtype, "device": self.device, "tier": self.tier,
        }


class ACEStepModel:
    """Pipeline + planner + one ModelPatcher per component. Immutable once built."""

    def __init__(self, pipeline, planner, decision: LoadDecision, load_device, offload_device, engine=None):
        self.pipeline = pipeline
        self.planner = planner
        self.decision = decision
        # The engine's loaded view (acestep_core/engine.py): its memory decision and `clamp(request)`,
        # the same limits the CLI and serve apply.
        self.engine = engine
        self.load_device = load_device
        self.offload_device = offload_device
        self.patchers: dict[str, Any] = {}
        for name, module in _pipeline_components(pipeline).items():
            self.patchers[name] = host.make_patcher(ComponentHolder(module), load_device, offload_device)
        # LoRA / LoKr adapters (ScaledAdapter) the engine patches in for each generation of this model.
        self.adapters: tuple = ()
        self.lm_patcher = None
        lm_module = _planner_module(planner)
        if lm_module is not None:
            self.lm_patcher = host.make_patcher(ComponentHolder(lm_module), load_device, offload_device)

    def with_adapter(self, adapter) -> "ACEStepModel":
        """The same weights with one more adapter; this model is left as it was."""
        clone = copy.copy(self)
        clone.adapters = tuple(self.adapters) + (adapter,)
        return clone

    # -- running stages under ComfyUI's memory manager --------------------------------------

    def run_pipeline(self, fn: Callable[[], Any], interruptible: bool = True) -> Any:
        """Load the DiT / text encoder / VAE patchers (evicting others as needed), run, release.
        `interruptible`: ComfyUI's Cancel ends the wait for another stage (off for REST jobs, which
        have their own cancel and must not take the graph's Cancel)."""
        with one_stage_at_a_time(interruptible):
            host.load_models(self.patchers.values())
            _point_at_device(self.pipeline, self.load_device)
            try:
                return fn()
            finally:
                self._after_stage(self.patchers.values())

    def run_planner(self, fn: Callable[[], Any], interruptible: bool = True) -> Any:
        if self.planner is None:
            raise RuntimeError("no LM loaded")
        with one_stage_at_a_time(interruptible):
            if self.lm_patcher is not None:
                host.load_models([self.lm_patcher])
            _point_at_device(self.planner, self.load_device)
            try:
                return fn()
            finally:
                self._after_stage([self.lm_patcher] if self.lm_patcher is not None else [])

    def _after_stage(self, patchers) -> None:
        if self.decision.offload:
            host.unload_models(patchers)
        host.soft_empty_cache()

    def describe(self) -> str:
        return self.decision.summary()


class ComponentHolder(torch.nn.Module):
    """What ComfyUI's ModelPatcher manages: it writes `model.device` and other bookkeeping
    attributes, which some modules (transformers models) expose as read-only properties."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.component = module
        self.device = next((p.device for p in module.parameters()), torch.device("cpu"))


def _pipeline_components(pipeline) -> dict:
    comps = getattr(pipeline, "components", None)
    if callable(comps):
        comps = comps()
    return {k: v for k, v in dict(comps or {}).items() if v is not None and hasattr(v, "parameters")}


def _planner_module(planner):
    if planner is None:
        return None
    for attr in ("model", "lm", "module"):
        module = getattr(planner, attr, None)
        if module is not None and hasattr(module, "parameters"):
            return module
    return None


def _point_at_device(obj, device) -> None:
    """Tell the pipeline where its weights now live: ComfyUI moved them, so the engine's own
    offload manager must stand aside (no second mover). The LM planner follows its weights."""
    import torch

    from ..acestep_core.memory.offload import OffloadManager

    if hasattr(obj, "offload") and hasattr(obj, "device"):
        device = torch.device(device)
        if obj.device != device or obj.offload.offload_to_cpu or obj.offload.offload_dit_to_cpu:
            obj.device = device
            obj.offload = OffloadManager(device)
