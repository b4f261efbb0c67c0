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

from ..errors import ACEStepError, CheckpointError

LM_PREFERENCE = ("acestep-5Hz-lm-1.7B", "acestep-5Hz-lm-0.6B", "acestep-5Hz-lm-4B")


class LMUnavailableError(ACEStepError):
    """A request needs the 5 Hz LM but none is configured or it failed to load."""


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


def model_name_from_path(path: str | os.PathLike | None, fallback: str) -> str:
    if not path:
        return fallback
    name = Path(str(path)).name
    return name[: -len(".safetensors")] if name.endswith(".safetensors") else name


def find_lm_folder(checkpoint_dir: Optional[Path], preferred: Optional[str] = None) -> Optional[Path]:
    """The LM folder under an official checkpoints/ root (ACESTEP_LM_MODEL_PATH wins)."""
    if checkpoint_dir is None or not checkpoint_dir.is_dir():
        return None
    names = ([preferred] if preferred else []) + list(LM_PREFERENCE)
    for name in names:
        folder = checkpoint_dir / name
        if (folder / "config.json").is_file():
            return folder
    for folder in sorted(checkpoint_dir.glob("acestep-5Hz-lm-*")):
        if (folder / "config.json").is_file():
            return folder
    return None


class LocalModelProvider:
    """Loads the engine from local folders on first use and keeps it for the server's lifetime."""

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
    ):
        # Extra ACEStepPipeline.from_pretrained arguments (offload, VAE window from the memory decision).
        self.pipeline_options = dict(pipeline_options or {})
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.dit = dit
        self.vae = vae
        self.text_encoder = text_encoder
        self.text_tokenizer = text_tokenizer
        self.device = device
        self.dtype = dtype
        self.lm_tokenizer = lm_tokenizer
        self.lm_path: Optional[Path] = None
        if use_lm:
            self.lm_path = Path(lm) if lm else find_lm_folder(self.checkpoint_dir, os.environ.get("ACESTEP_LM_MODEL_PATH"))
        self._dit_name = model_name_from_path(dit, "acestep-v15-turbo")
        self._lock = threading.Lock()
        self._pipeline = None
        self._planner = None
        self._lm_error: Optional[str] = None

    def models(self) -> list[ModelInfo]:
        return [ModelInfo(self._dit_name, is_default=True)]

    def lm_name(self) -> Optional[str]:
        return self.lm_path.name if self.lm_path else None

    def pipeline(self, model: Optional[str] = None) -> tuple[Any, str]:
        with self._lock:
            if self._pipeline is None:
                from ..memory.policy import decide, detect_device_memory
                from ..pipeline import ACEStepPipeline, resolve_device

                # An XL DiT that cannot fit is refused with the policy's message, not an out-of-memory crash.
                decide(detect_device_memory(resolve_device(self.device)), dit=self._dit_name).check_dit()
                self._pipeline = ACEStepPipeline.from_pretrained(
                    checkpoint_dir=self.checkpoint_dir,
                    dit=self.dit,
                    vae=self.vae,
                    text_encoder=self.text_encoder,
                    text_tokenizer=self.text_tokenizer,
                    device=self.device,
                    dtype=self.dtype,
                    **self.pipeline_options,
                )
            return self._pipeline, self._dit_name

    def planner(self) -> Any:
        with self._lock:
            if self._planner is not None:
                return self._planner
            if self.lm_path is None:
                raise LMUnavailableError(
                    "this request needs the 5 Hz LM (thinking, use_format, sample_mode or sample_query), "
                    "but the server runs without one; start it with --lm <folder> (or a --checkpoint-dir "
                    "holding acestep-5Hz-lm-*), or send thinking=false, use_format=false and no sample_query")
            if self._lm_error is not None:
                raise LMUnavailableError(f"the 5 Hz LM failed to load earlier: {self._lm_error}")
            from ..lm import LMPlanner

            try:
                self._planner = LMPlanner.from_pretrained(
                    str(self.lm_path), tokenizer_path=self.lm_tokenizer, device=self.device, dtype=self.dtype)
            except (CheckpointError, OSError, ValueError) as exc:
                self._lm_error = str(exc)
                raise LMUnavailableError(f"the 5 Hz LM at {self.lm_path} failed to load: {exc}") from exc
            return self._planner
