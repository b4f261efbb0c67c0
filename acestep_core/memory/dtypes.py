"""The one rule for the compute dtype that `auto` picks (docs/memory.md#dtypes).

Every door uses it: the memory decision (`policy.decide`, hence the CLI, the doctor and the Load node),
the pipeline's and the LM's own `dtype="auto"`. On a CPU with native bfloat16 arithmetic
(AVX512-BF16 or AMX) `auto` picks bfloat16: a DiT step then takes about a third of its float32 time
and the LM and encoders gain as much (docs/readme/performance.md), and it is the precision the official
code runs on every GPU. Elsewhere on a CPU bfloat16 is emulated and slow, so float32 stays.
`ACESTEP_CPU_BF16=0` (or `--dtype float32`) keeps float32, for exact parity with the official CPU
results; `=1` forces bfloat16. What the official code keeps in higher precision stays so in every
dtype (the time grid's construction, APG's float64 projection, FSQ rounding, the decoded audio).
"""

from __future__ import annotations

import functools
import logging
import os
import platform
from typing import Mapping

from ..errors import InputError
from ..switches import env_flag, parse_switch

logger = logging.getLogger("acestep_core.memory")

ENV_CPU_BF16 = "ACESTEP_CPU_BF16"

DTYPE_NAMES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
               "float16": "float16", "fp16": "float16"}

# /proc/cpuinfo flags of x86 CPUs that multiply bfloat16 in hardware.
_NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def is_x86() -> bool:
    """Whether this machine's CPU is x86 (what the CPU-feature fast paths below are measured on)."""
    return platform.machine().lower() in ("x86_64", "amd64", "x86", "i686")


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bfloat16 in hardware (x86 AVX512-BF16 or AMX-BF16).

    Asks torch's CPU feature probe first, then the kernel's flags; anything else (ARM, Apple, an
    unknown platform, a failing probe) counts as no, because emulated bfloat16 is slower than float32.
    """
    if not is_x86():
        return False
    import torch

    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    try:
        if any(probe is not None and probe() for probe in probes):
            return True
    except Exception:  # a private torch API: treat a failure as "unknown" and read the flags
        pass
    flags = set(_cpuinfo_field("flags").split())
    return any(flag in flags for flag in _NATIVE_BF16_FLAGS)


@functools.lru_cache(maxsize=1)
def cpu_has_amx() -> bool:
    """True when this x86 CPU has AMX tiles (Intel Sapphire Rapids and newer).

    Some half-precision CPU kernels are fast only with them: SDPA's flash kernel runs its bfloat16
    products on AMX where it can and on a slow generic path where it cannot (see `lm/decoder.py`)."""
    if not is_x86():
        return False
    import torch

    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    try:
        if probe is not None:
            return bool(probe())
    except Exception:  # a private torch API: treat a failure as "unknown" and read the flags
        pass
    return "amx_tile" in _cpuinfo_field("flags").split()


def _cpuinfo_field(name: str) -> str:
    """The value of the first `name` line of /proc/cpuinfo (Linux), or "" where there is none."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith(name):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_vendor() -> str:
    """The x86 vendor string of this CPU ("GenuineIntel", "AuthenticAMD", ...), or "" if unknown."""
    vendor = _cpuinfo_field("vendor_id")
    if vendor:
        return vendor
    # Windows: "Intel64 Family 6 Model 85 Stepping 7, GenuineIntel"
    return next((v for v in ("GenuineIntel", "AuthenticAMD") if v in platform.processor()), "")


def cpu_bf16_override(env: Mapping[str, str] | None = None) -> bool | None:
    """`ACESTEP_CPU_BF16` as True / False, or None when unset, `auto` or not a yes/no value."""
    try:
        return env_flag(ENV_CPU_BF16, None, "", env)
    except InputError:
        raw = ((os.environ if env is None else env).get(ENV_CPU_BF16) or "").strip().lower()
        logger.warning("ignoring %s=%r: use 1/true/yes/on, 0/false/no/off or auto", ENV_CPU_BF16, raw)
        return None


def _unreadable_bf16_switch(env: Mapping[str, str] | None) -> str:
    """The decision's reason for an ACESTEP_CPU_BF16 value that is not a yes / no word ('' when it is one)."""
    raw = ((os.environ if env is None else env).get(ENV_CPU_BF16) or "").strip()
    if not raw or raw.lower() == "auto" or parse_switch(raw) is not None:
        return ""
    return (f"{ENV_CPU_BF16}={raw!r} is not a yes/no value (use 1/true/yes/on, 0/false/no/off or auto); "
            "ignored.")


def auto_dtypes(device_type: str, bf16_supported: bool, env: Mapping[str, str] | None = None
                ) -> tuple[str, str, str]:
    """(model dtype, LM dtype, reason) that `auto` means on `device_type`.

    `bf16_supported`: the device computes bfloat16 natively (a CUDA card from Ampere on; on a CPU,
    `cpu_has_native_bf16()`). The model dtype covers the text encoder, condition encoder, DiT and VAE.
    """
    if device_type == "cpu":
        override = cpu_bf16_override(env)
        if override is False:
            return "float32", "float32", f"{ENV_CPU_BF16}=0: float32 on the CPU (exact parity with the official CPU results)."
        if override:
            return "bfloat16", "bfloat16", f"{ENV_CPU_BF16}=1: bfloat16 on the CPU (forced; slow where it is emulated)."
        ignored = _unreadable_bf16_switch(env)  # auto's choice stands; the reasons say the value was ignored
        prefix = f"{ignored} " if ignored else ""
        if bf16_supported:
            return "bfloat16", "bfloat16", prefix + (
                "The CPU computes bfloat16 natively (AVX512-BF16 / AMX): every model runs in bfloat16, about "
                f"three times faster than float32; set {ENV_CPU_BF16}=0 or pass --dtype float32 for exact float32 results.")
        return "float32", "float32", prefix + "float32 on the CPU (it has no native bfloat16, which would be emulated and slow)."
    if device_type == "mps":
        return "float16", "float32", "MPS: float16 models, the LM in float32."
    if device_type == "cuda" and not bf16_supported:
        return "float16", "float16", "This CUDA card has no bfloat16: float16."
    return "bfloat16", "bfloat16", f"{device_type.upper()}: bfloat16."


def device_bf16_supported(device) -> bool:
    """Whether `device` (a torch.device or its name) computes bfloat16 natively."""
    import torch

    device_type = getattr(device, "type", str(device).split(":")[0])
    if device_type == "cpu":
        return cpu_has_native_bf16()
    if device_type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return True


def resolve_dtype(dtype, device, lm: bool = False, env: Mapping[str, str] | None = None):
    """A torch dtype from a name or `auto` (the rule above) for `device`; `lm` picks the LM's column.

    Raises `InputError` for an unknown name."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        device_type = getattr(device, "type", str(device).split(":")[0])
        model, lm_dtype, _ = auto_dtypes(device_type, device_bf16_supported(device), env)
        name = lm_dtype if lm else model
    else:
        name = DTYPE_NAMES.get(str(dtype).lower())
        if name is None:
            raise InputError(f"dtype must be auto, float32, bfloat16 or float16, got {dtype!r}")
    return getattr(torch, name)
