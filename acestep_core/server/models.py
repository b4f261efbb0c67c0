"""Model access for the server: a provider hands the worker the pipeline and (optionally) the LM.

The server never decides where weights come from. Headless, `LocalModelProvider` loads them lazily
from the folders given on the command line; inside ComfyUI, nodes/rest_routes.py supplies a provider
that reuses the models ComfyUI already holds. Every method that may load weights is blocking and is
only called from the worker thread.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Protocol

from ..checkpoints import LM_FOLDER_PREFIX, find_lms, preferred_lm
from ..errors import LMUnavailableError  # noqa: F401  (re-exported: it lived here before errors.py)

NO_LM_MESSAGE = (
    "this request needs the 5 Hz LM (thinking, use_format, sample_mode or sample_query), but the server runs "
    "without one (its memory decision leaves the LM off, or none was found); start it with --lm <folder> (or a "
    "--checkpoint-dir holding acestep-5Hz-lm-*, with ACESTEP_INIT_LLM=1 where the tier leaves the LM off), "
    "or send thinking=false, use_format=false and no sample_query")

LM_PREFERENCE = ("acestep-5Hz-lm-1.7B", "acestep-5Hz-lm-0.6B", "acestep-5Hz-lm-4B")


@dataclass
class ModelInfo:
    name: str
    is_default: bool = False


class ModelProvider(Protocol):
    def models(self) -> list[ModelInfo]:
        """DiT models this server can run (cheap: must not load weights)."""

    def lm_name(self) -> Optional[str]:
        """Name of the 5 Hz LM, or None if the server has none."""

    def pipeline(self, model: Optional[str] = None) -> tuple[Any, str]:
        """(ACEStepPipeline, name) for `model`, or the default one when it is None or unknown."""

    def planner(self) -> Any:
        """The LMPlanner; raises LMUnavailableError when there is none."""

    def decision(self) -> Any:
        """The memory decision requests are held to (a MemoryDecision), or None."""


def model_name_from_path(path: str | os.PathLike | None, fallback: str) -> str:
    if not path:
        return fallback
    name = Path(str(path)).name
    return name[: -len(".safetensors")] if name.endswith(".safetensors") else name


def find_lm_folder(checkpoint_dir: Optional[Path], preferred: Optional[str] = None) -> Optional[Path]:
    """The LM folder under an official checkpoints/ root (`preferred`: a folder name or size to try first)."""
    if checkpoint_dir is None or not Path(checkpoint_dir).is_dir():
        return None
    if preferred and (Path(checkpoint_dir) / preferred / "config.json").is_file():
        return Path(checkpoint_dir) / preferred
    size = preferred[len(LM_FOLDER_PREFIX):] if preferred and preferred.startswith(LM_FOLDER_PREFIX) else preferred
    return preferred_lm(find_lms([checkpoint_dir]), size)


class LocalModelProvider:
    """Loads the engine from local folders on first use and keeps it for the server's lifetime.

    What loads, and where, is `loading.decide_load`'s decision (the one the CLI and the Load node make):
    the LM is offered only when the decision turns it on (or --lm names one), the pipeline gets its
    dtype, offload and VAE window. The decision is made at construction, so `serve` logs and reports it
    before the first request.
    """

    def __init__(
        self,
        checkpoint_dir: Optional[str | Path] = None,
        dit: Optional[str] = None,
        vae: Optional[str] = None,
        text_encoder: Optional[str] = None,
        text_tokenizer: Optional[str] = None,
        lm: Optional[str] = None,
        lm_tokenizer: Optional[str] = None,
        use_lm: bool = True,
        device: str = "cpu",
        dtype: str = "auto",
        pipeline_options: Optional[dict] = None,
        offload: str = "auto",
        memory: Any = None,
        tiny: bool = False,
    ):
        from ..engine import Engine
        from ..loading import LoadChoices, ModelPaths, lm_token_cap, plan_load

        if pipeline_options:  # the decision now sets offload and the VAE window itself
            offload = {True: "on", False: "off"}.get(pipeline_options.get("offload_to_cpu"), offload)
        self.paths = ModelPaths(checkpoint_dir=checkpoint_dir, dit=dit, vae=vae, text_encoder=text_encoder,
                                text_tokenizer=text_tokenizer, lm=lm if use_lm else None,
                                lm_tokenizer=lm_tokenizer, tiny=tiny)
        self.choices = LoadChoices(device=device, dtype=dtype, offload=offload, lm="auto" if use_lm else "none")
        self.device = device
        self._plan = plan_load(self.paths, self.choices, memory)
        self.checkpoint_dir = self._plan.paths.checkpoint_dir
        self.lm_path: Optional[Path] = Path(self._plan.lm_path) if self._plan.lm_path else None
        self._dit_name = model_name_from_path(self._plan.paths.dit, "acestep-v15-turbo")
        self._lock = threading.Lock()
        # The engine's LM side works before the pipeline loads (a format_input needs no DiT).
        self.engine = Engine(None, self._plan.decision, labels=self._plan.paths.labels(), lm_path=self._plan.lm_path,
                             lm_tokenizer=self._plan.paths.lm_tokenizer, lm_device=device,
                             no_lm_message=NO_LM_MESSAGE, lm_token_cap=lm_token_cap(self._plan.paths))

    def decision(self):
        return self._plan.decision

    def models(self) -> list[ModelInfo]:
        return [ModelInfo(self._dit_name, is_default=True)]

    def lm_name(self) -> Optional[str]:
        return self.engine.lm_name()

    def pipeline(self, model: Optional[str] = None) -> tuple[Any, str]:
        with self._lock:
            if self.engine.pipeline is None:
                from ..loading import load_pipeline

                self.engine.pipeline = load_pipeline(self._plan, self.device)
            return self.engine.pipeline, self._dit_name

    def planner(self) -> Any:
        return self.engine.planner()
