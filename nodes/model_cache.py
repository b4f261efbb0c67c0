"""The most recently loaded ACE-Step model, for code outside the graph (e.g. REST routes).

Only a weak reference is kept: ComfyUI's node cache owns the model's lifetime, and this
registry must never keep weights alive after the graph dropped them.
"""

from __future__ import annotations

import threading
import weakref
from typing import Optional

_lock = threading.Lock()
_latest: Optional[weakref.ReferenceType] = None


def remember(model) -> None:
    global _latest
    with _lock:
        _latest = weakref.ref(model)


def get_loaded_model():
    """The ACE15S model object (pipeline, planner, patchers) loaded last, or None."""
    with _lock:
        return _latest() if _latest is not None else None


def get_loaded_pipeline():
    """The engine pipeline of the most recently loaded model, or None."""
    model = get_loaded_model()
    return getattr(model, "pipeline", None) if model is not None else None


def forget() -> None:
    global _latest
    with _lock:
        _latest = None
