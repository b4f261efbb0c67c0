"""Errors the engine raises for problems a user can fix.

Every message says what is wrong and what to do about it, so front ends (CLI, ComfyUI nodes,
REST server) can show it as is instead of a traceback.
"""


def _public_module(name: str) -> str:
    """`acestep_core.<module>` for a module imported under any package (ComfyUI imports the node pack,
    and with it this package, under its folder's path), so an error's type reads the same everywhere."""
    head, sep, tail = name.rpartition("acestep_core")
    return "acestep_core" + tail if sep else name


class ACEStepError(Exception):
    """Base class of every user-facing engine error."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.__module__ = _public_module(cls.__module__)


ACEStepError.__module__ = _public_module(ACEStepError.__module__)


class CheckpointError(ACEStepError):
    """A checkpoint file or folder is missing, corrupt or does not match the expected layout."""


class InputError(ACEStepError, ValueError):
    """A request parameter or input file is invalid."""


class CancelledError(ACEStepError):
    """The caller's cancel check asked the engine to stop."""


class InsufficientMemoryError(ACEStepError):
    """The chosen model cannot run in this device's memory (the message says what can)."""


class AdapterError(InputError):
    """A LoRA / LoKr adapter is missing, corrupt, or made for another model."""


class LMUnavailableError(ACEStepError):
    """A request needs the 5 Hz LM but none is configured or it failed to load."""
