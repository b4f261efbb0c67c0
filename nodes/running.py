"""Run an engine call inside a node: progress bar, Cancel, and user-facing errors."""

from __future__ import annotations

from typing import Any, Callable

from ..acestep_core.errors import CancelledError
from . import host


def run_engine(call: Callable[..., Any], node_id=None) -> Any:
    """Call `call(progress=..., cancel=...)`.

    Cancel reaches the engine two ways: the progress callback raises ComfyUI's interrupt
    exception inside the loop (propagates untouched), and the cancel callback lets an engine
    that polls stop cleanly with CancelledError, which is turned back into ComfyUI's interrupt
    so the executor reports `execution_interrupted` rather than an error.
    """
    progress = host.StageProgress(node_id)
    try:
        return call(progress=progress, cancel=host.is_interrupted)
    except host.InterruptProcessingException:
        raise
    except CancelledError:
        host.raise_if_interrupted()
        raise
