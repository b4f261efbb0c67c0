"""ACE-Step 1.5 engine: official checkpoints → music. Pure torch + diffusers + transformers."""

from .errors import ACEStepError, CancelledError, CheckpointError, InputError
from .plan import Plan
from .request import GenerationRequest

__all__ = [
    "ACEStepError",
    "ACEStepPipeline",
    "CancelledError",
    "CheckpointError",
    "GenerationRequest",
    "GenerationResult",
    "InputError",
    "Plan",
]


def __getattr__(name):
    # The pipeline pulls in diffusers; import it only when asked for.
    if name in ("ACEStepPipeline", "GenerationResult"):
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(name)
