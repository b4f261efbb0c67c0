"""The Oobleck VAE decoder under `torch.compile`, opt-in with `ACESTEP_VAE_COMPILE=1`.

Inductor fuses each Snake and residual sum into one kernel. A bfloat16 decode of 4 s of audio on one
thread of an AMX Xeon took 1.72 s compiled against 2.97 s eager, after a 31 s compile (the compiled
graph is cached on disk for later processes); the samples differ by a relative 0.4 % (other fusion,
other roundings). So it pays for long songs and repeated decodes, not for one short one, and it needs
a working compiler toolchain (on a CPU a C++ compiler, which most Windows and macOS machines lack):
off by default. Where compiling fails the decode goes on eagerly, with a warning, for the rest of
the process.
"""

from __future__ import annotations

import logging

import torch

from .errors import CancelledError
from .switches import env_flag

logger = logging.getLogger("acestep_core.vae")

ENV = "ACESTEP_VAE_COMPILE"


def compile_requested() -> bool:
    """`ACESTEP_VAE_COMPILE`: `1` compiles the decoder, unset / `0` keeps it eager."""
    return env_flag(ENV, False, "set 1 to decode through torch.compile, or 0 (or leave it unset) to decode eagerly")


def compile_decoder(vae) -> None:
    """Route `vae.decoder`'s forward through `torch.compile` (dynamic shapes: one graph for every
    tile length), falling back to the eager forward for good if compiling or the compiled call fails."""
    eager = vae.decoder.forward
    compiled = torch.compile(eager, dynamic=True)

    def forward(*args, **kwargs):
        nonlocal compiled
        if compiled is not None:
            try:
                return compiled(*args, **kwargs)
            except (torch.OutOfMemoryError, CancelledError, KeyboardInterrupt):
                raise  # the decode's own fallbacks and cancel handle these
            except Exception as exc:  # no compiler, an op inductor cannot lower, ...
                compiled = None
                logger.warning("VAE decoder: torch.compile failed (%s: %s); decoding eagerly from now on",
                               type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
        return eager(*args, **kwargs)

    vae.decoder.forward = forward
