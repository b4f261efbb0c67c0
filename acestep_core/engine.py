"""A loaded engine: the pipeline, the memory decision it was loaded with, and the 5 Hz LM on demand.

Made by `loading.load_engine` (the one loader the CLI, `serve` and the ComfyUI Load node share).
It holds the decision's limits, so every front end clamps a request the same way.
"""

from __future__ import annotations

import copy
import threading
from pathlib import Path
from typing import Any, Optional

from .errors import CheckpointError, LMUnavailableError
from .memory.policy import MemoryDecision, clamp_request

NO_LM_MESSAGE = (
    "this needs the 5 Hz LM (thinking, format, sample or understand), but none is loaded: the memory "
    "decision left it off or no acestep-5Hz-lm-* checkpoint was found. Install one beside the checkpoints, "
    "name it (--lm / --lm-model, the Load node's lm) or set ACESTEP_INIT_LLM=1 to turn it on")


def load_lm_planner(path, tokenizer, device, dtype, token_cap: Optional[int] = None):
    """An `LMPlanner` from an LM folder or file (tokenizer: for single files, which carry none);
    `token_cap`: the most tokens its free-running phases write (`LMPlanner.free_text_token_cap`)."""
    from .lm import LMPlanner

    planner = LMPlanner.from_pretrained(str(path), tokenizer_path=tokenizer, device=device or "cpu",
                                        dtype=dtype or "auto")
    planner.free_text_token_cap = token_cap
    return planner


def clamp_to(decision: MemoryDecision, request):
    """(`request`, or a copy held to the decision's duration and batch limits; the notices)."""
    duration, batch, notices = clamp_request(decision, request.audio_duration, request.batch_size)
    if not notices:
        return request, []
    clamped = copy.copy(request)
    clamped.audio_duration, clamped.batch_size = duration, batch
    return clamped, notices


class Engine:
    """`pipeline` + `decision` + the LM, loaded on first `planner()` call and kept."""

    def __init__(self, pipeline, decision: MemoryDecision, labels: Optional[dict] = None,
                 lm_path: Optional[str | Path] = None, lm_tokenizer: Optional[str | Path] = None,
                 lm_device: Any = None, no_lm_message: str = NO_LM_MESSAGE, lm_token_cap: Optional[int] = None):
        self.pipeline = pipeline
        self.decision = decision
        self.labels = dict(labels or {})
        self.lm_path = str(lm_path) if lm_path else None
        self.lm_tokenizer = lm_tokenizer
        self.lm_device = lm_device
        self.no_lm_message = no_lm_message  # each front end names its own way to get an LM
        self.lm_token_cap = lm_token_cap
        self._planner = None
        self._lm_error: Optional[str] = None
        self._lock = threading.Lock()

    # ---- the LM ---------------------------------------------------------------------------------
    def has_lm(self) -> bool:
        """True when the decision turns the LM on and there is one to load."""
        return bool(self.decision.init_lm and self.lm_path)

    def lm_name(self) -> Optional[str]:
        return Path(self.lm_path).name if self.has_lm() else None

    def planner(self):
        """The LMPlanner, loaded on first use on the pipeline's device with the decision's LM dtype.
        Raises LMUnavailableError when there is none or it failed to load (the failure is kept)."""
        with self._lock:
            if self._planner is not None:
                return self._planner
            if not self.has_lm():
                raise LMUnavailableError(self.no_lm_message)
            if self._lm_error is not None:
                raise LMUnavailableError(f"the 5 Hz LM failed to load earlier: {self._lm_error}")
            device = self.lm_device if self.lm_device is not None else getattr(self.pipeline, "device", "cpu")
            try:
                self._planner = load_lm_planner(self.lm_path, self.lm_tokenizer, str(device), self.decision.lm_dtype,
                                                self.lm_token_cap)
            except (CheckpointError, OSError, ValueError) as exc:
                self._lm_error = str(exc)
                raise LMUnavailableError(f"the 5 Hz LM at {self.lm_path} failed to load: {exc}") from exc
            return self._planner

    def release_planner(self) -> None:
        """Drop the LM (the CLI frees its memory before the DiT runs); a later `planner()` reloads it."""
        with self._lock:
            self._planner = None

    # ---- limits ---------------------------------------------------------------------------------
    @property
    def limits(self) -> dict[str, int]:
        return {"max_duration_s": self.decision.max_duration_s, "max_batch": self.decision.max_batch}

    def clamp(self, request):
        """(a copy of `request` held to the decision's duration and batch limits, the notices)."""
        return clamp_to(self.decision, request)

    def describe(self) -> str:
        lines = [f"{name}: {value}" for name, value in self.labels.items()]
        lines.append(f"LM: {self.lm_name() or 'none'}")
        lines.append(f"memory: {self.decision.summary()}")
        lines += [f"- {reason}" for reason in self.decision.reasons]
        return "\n".join(lines)
