"""Errors the engine raises for problems a user can fix.

Every message says what is wrong and what to do about it, so front ends (CLI, ComfyUI nodes,
REST server) can show it as is instead of a traceback.
"""


class ACEStepError(Exception):
    """Base class of every user-facing engine error."""


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
