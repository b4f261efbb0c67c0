"""The ACE-Step REST API on ComfyUI's own server, under /acestep (api_url = http://HOST:8188/acestep).

Same routes and runtime as the headless server; what differs is where things come from:
- models: the model the graph loaded last (Load ACE-Step), so API jobs reuse weights ComfyUI
  already holds and run them through ComfyUI's memory manager; if the graph has loaded none, the
  Load ACE-Step defaults ("auto" everything) are loaded once;
- results: <ComfyUI output>/acestep_api/<task_id>/; JSON requests may name files in ComfyUI's input
  folder as src_audio_path;
- scheduling: the API worker waits until ComfyUI's prompt queue is idle before each job, and every
  stage (LM, pipeline) of either holds the pack's stage lock (nodes/model.py), so a graph queued
  during a job waits for the job's stage to end: graph runs and API jobs take turns on the models;
- access: without ACESTEP_API_KEY only loopback clients may use these routes (ComfyUI may be
  listening on every interface).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from pathlib import Path
from typing import Any, Callable, Optional

from ..acestep_core.errors import ACEStepError
from ..acestep_core.server import LMUnavailableError, ModelInfo, Runtime, ServerConfig, add_routes
from . import model_cache

log = logging.getLogger(__name__)

ROUTE_PREFIX = "/acestep"
RESULT_SUBFOLDER = "acestep_api"
IDLE_POLL_S = 0.5

_registered: Optional[Runtime] = None


class _Staged:
    """Calls on the wrapped engine object run inside `runner` (ComfyUI loads the weights first)."""

    def __init__(self, target: Any, runner: Callable[[Callable[[], Any]], Any]):
        self._target = target
        self._runner = runner

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr

        def staged(*args, **kwargs):
            return self._runner(lambda: attr(*args, **kwargs))

        return staged


def default_components() -> tuple[str, str, str]:
    """What a fresh Load ACE-Step node is set to: its default DiT (turbo first) with the VAE and text
    encoder on auto (loader_node resolves auto, for the graph and these routes alike)."""
    from ..acestep_core.errors import CheckpointError
    from .model_files import AUTO, dit_choices, preferred_dit

    dits = dit_choices()
    if not dits:
        raise CheckpointError(
            "no ACE-Step model in ComfyUI's model folders: put acestep_v1.5_turbo.safetensors in "
            "models/diffusion_models/ (plus the VAE and text encoder), ace_step_1.5_turbo_aio.safetensors in "
            "models/checkpoints/, or official folders in models/acestep/")
    return preferred_dit(dits), AUTO, AUTO


class ComfyModelProvider:
    """Hands the API worker the ACE-Step model ComfyUI holds (loading the defaults if none)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._own = None  # a model this provider loaded itself (only when the graph loaded none)

    def _current(self):
        return model_cache.get_loaded_model() or self._own

    def _model(self):
        model = self._current()
        if model is not None:
            return model
        with self._lock:
            if self._own is None:
                from .loader_node import load_model

                dit, vae, text_encoder = default_components()
                self._own = load_model(dit, vae, text_encoder, "auto", "auto", "auto")
            return self._own

    @staticmethod
    def _name(model) -> str:
        decision = getattr(model, "decision", None)
        name = getattr(decision, "dit", None) or "acestep-v15-turbo"
        base = os.path.basename(str(name))
        return base[: -len(".safetensors")] if base.endswith(".safetensors") else base

    def models(self) -> list[ModelInfo]:
        model = self._current()
        if model is not None:
            return [ModelInfo(self._name(model), is_default=True)]
        try:
            from .model_files import dit_choices, preferred_dit

            names = dit_choices()
        except Exception:  # listing must never break /v1/models
            names = []
        default = preferred_dit(names) if names else None
        return [ModelInfo(os.path.basename(n).removesuffix(".safetensors"), is_default=n == default)
                for n in sorted(names, key=lambda n: n != default)]

    def lm_name(self) -> Optional[str]:
        model = self._current()
        if model is None:
            return "auto"  # decided when the defaults are loaded
        engine = getattr(model, "engine", None)
        if engine is not None:
            return engine.lm_name()
        lm = getattr(getattr(model, "decision", None), "lm", "none")
        return None if getattr(model, "planner", None) is None or lm == "none" else f"acestep-5Hz-lm-{lm}"

    def decision(self):
        """The memory decision requests are held to: the loaded model's, or before any is loaded the one
        the defaults would get (decided, nothing loaded); None when there are no model files."""
        model = self._current()
        if model is not None:
            engine = getattr(model, "engine", None)
            return engine.decision if engine is not None else None
        try:
            from .loader_node import plan_for

            return plan_for(*default_components(), "auto", "auto", "auto")[2].decision
        except ACEStepError:  # no models yet: the job itself will say so
            return None

    def pipeline(self, model: Optional[str] = None):
        loaded = self._model()
        return _Staged(loaded.pipeline, lambda fn: loaded.run_pipeline(fn, interruptible=False)), self._name(loaded)

    def planner(self):
        loaded = self._model()
        if getattr(loaded, "planner", None) is None:
            raise LMUnavailableError(
                "this request needs the 5 Hz LM (thinking, use_format, sample_mode or sample_query), but the "
                "ACE-Step model loaded in ComfyUI has none: set 'lm' on Load ACE-Step (and install an LM), "
                "or send thinking=false, use_format=false and no sample_query")
        return _Staged(loaded.planner, lambda fn: loaded.run_planner(fn, interruptible=False))


def comfy_idle_gate(prompt_server) -> Callable[[], Any]:
    async def wait_for_idle() -> None:
        queue = getattr(prompt_server, "prompt_queue", None)
        while queue is not None and queue.get_tasks_remaining() > 0:
            await asyncio.sleep(IDLE_POLL_S)

    return wait_for_idle


def build_runtime(prompt_server) -> Runtime:
    import folder_paths

    result_dir = Path(folder_paths.get_output_directory()) / RESULT_SUBFOLDER
    # Adapters for /acestep/v1/lora/load come from every 'loras' folder ComfyUI knows (extra_model_paths
    # included, as the LoRA node lists them) unless ACESTEP_LORA_DIR says otherwise.
    loras = folder_paths.get_folder_paths("loras") if "loras" in folder_paths.folder_names_and_paths else []
    lora_dirs = tuple(Path(d) for d in loras) if not os.environ.get("ACESTEP_LORA_DIR") else None
    config = ServerConfig.from_env(result_dir, input_dirs=(Path(folder_paths.get_input_directory()),),
                                   loopback_only=True, lora_dirs=lora_dirs or None)
    provider = ComfyModelProvider()
    # Duration and batch are held to the same memory decision as the Load node's (as for `serve`).
    return Runtime(provider, config, idle_gate=comfy_idle_gate(prompt_server), memory_decision=provider.decision)


def register_routes(prompt_server) -> Runtime:
    """Mount the API on PromptServer.instance.routes (called once from the pack's __init__)."""
    global _registered
    if _registered is not None:
        return _registered
    runtime = build_runtime(prompt_server)
    paths = add_routes(prompt_server.routes, prefix=ROUTE_PREFIX, runtime=runtime)
    _registered = runtime
    log.info("ACE-Step REST API mounted: %s", ", ".join(paths))
    return runtime
