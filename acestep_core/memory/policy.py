"""Memory policy: from the device's total and free memory, decide what runs and where.

`detect_device_memory()` measures the device (CUDA, MPS, XPU or CPU; `MAX_CUDA_VRAM` and friends
simulate a smaller card), `decide()` turns the measurement plus environment overrides into one frozen
`MemoryDecision` (tier, LM size, whether the LM runs, CPU / DiT offload, duration and batch limits, VAE
chunk size, dtype) with human-readable reasons, and `clamp_request()` applies the limits to a request.

Tiers follow the current official policy ([M], `acestep/gpu_config.py`, April 2026). Where the
release-era policy ([R], Feb 2026) differs it is noted next to the table. This module never imports
ComfyUI: inside ComfyUI, the node passes the numbers in through `memory_from_values()` or
`memory_from_comfy()`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from dataclasses import dataclass
from typing import Any, Mapping

from .dtypes import auto_dtypes, cpu_has_native_bf16
from ..errors import InputError
from ..switches import env_flag

logger = logging.getLogger("acestep_core.memory")

GIB = 1024**3

LM_SIZES = ("0.6B", "1.7B", "4B")
LM_FOLDER_PREFIX = "acestep-5Hz-lm-"

# Environment variables read by `decide()` / `detect_device_memory()` (docs/memory.md#environment-variables).
ENV_INIT_LLM = "ACESTEP_INIT_LLM"
ENV_LM_MODEL_PATH = "ACESTEP_LM_MODEL_PATH"
ENV_OFFLOAD_TO_CPU = "ACESTEP_OFFLOAD_TO_CPU"
ENV_OFFLOAD_DIT_TO_CPU = "ACESTEP_OFFLOAD_DIT_TO_CPU"
ENV_VAE_CHUNK = "ACESTEP_VAE_DECODE_CHUNK_SIZE"
ENV_ALLOW_XL = "ACESTEP_ALLOW_XL"
SIMULATE_ENV = {"cuda": "MAX_CUDA_VRAM", "mps": "MAX_MPS_VRAM", "xpu": "MAX_XPU_VRAM"}


# --------------------------------------------------------------------------------------------------
# Tier table ([M] gpu_config.py GPU_TIER_CONFIGS; boundaries from get_gpu_tier)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tier:
    name: str
    label: str  # the VRAM range, for messages
    allowed_lms: tuple[str, ...]
    recommended_lm: str  # "none" when no LM fits
    max_duration_lm: int  # seconds
    max_duration_no_lm: int
    max_batch_lm: int
    max_batch_no_lm: int
    offload_to_cpu: bool
    offload_dit_to_cpu: bool
    init_lm: bool  # the LM runs by default: [M] from tier3 on ([R]: from tier5)


# [M] values. Differences from [R] (release f30aee4):
#   - [R] durations: tier1 180/180, tier2 360/360, tier3-5 240/360, tier6 (≤24 GB) 480/480.
#   - [R] batches: tier3 1/2, tier4 2/4, tier5 2/4, tier6 4/8.
#   - [R] had one tier6 (15.5-24 GB, LMs up to 4B); [M] splits it at 20 GB into 6a / 6b.
#   - [R] init_lm_default only from tier5; [M] from tier3.
#   - [R] auto offload below 15.5 GB and no automatic DiT offload; [M] offloads idle components
#     below 20 GB and the DiT too below 12 GB.
TIERS: dict[str, Tier] = {
    t.name: t
    for t in (
        Tier("tier1", "≤4 GB", (), "none", 240, 360, 1, 1, True, True, False),
        Tier("tier2", "4-6 GB", (), "none", 480, 600, 1, 1, True, True, False),
        Tier("tier3", "6-8 GB", ("0.6B",), "0.6B", 480, 600, 2, 2, True, True, True),
        Tier("tier4", "8-12 GB", ("0.6B",), "0.6B", 480, 600, 2, 4, True, True, True),
        Tier("tier5", "12-16 GB", ("0.6B", "1.7B"), "1.7B", 480, 600, 4, 4, True, False, True),
        Tier("tier6a", "16-20 GB", ("0.6B", "1.7B"), "1.7B", 480, 600, 4, 8, True, False, True),
        Tier("tier6b", "20-24 GB", LM_SIZES, "1.7B", 480, 480, 8, 8, False, False, True),
        Tier("unlimited", ">24 GB", LM_SIZES, "4B", 600, 600, 8, 8, False, False, True),
    )
}

# A card that reports 15.5-16 GB is a 16 GB card (drivers reserve a little).
_16GB_CLASS_MIN_GB = 15.5


def tier_for_gb(total_gb: float) -> Tier:
    """The [M] tier of an accelerator with `total_gb` GiB of memory."""
    if total_gb <= 4:
        return TIERS["tier1"]
    if total_gb <= 6:
        return TIERS["tier2"]
    if total_gb <= 8:
        return TIERS["tier3"]
    if total_gb <= 12:
        return TIERS["tier4"]
    if total_gb < _16GB_CLASS_MIN_GB:
        return TIERS["tier5"]
    if total_gb < 20:
        return TIERS["tier6a"]
    if total_gb <= 24:
        return TIERS["tier6b"]
    return TIERS["unlimited"]


# CPU-only machines. The official code treats "no GPU" as tier1 (no LM, 4 / 6 min); here system RAM
# decides instead, so a CPU-only user can still run everything, just slowly. RAM is sized for fp32
# (a CPU without native bf16; with it, dtypes.py picks bf16 and the weights take half): DiT 2B ≈ 9.6 GB + text encoder ≈ 2.4 GB + VAE ≈ 0.7 GB ≈ 13 GB,
# plus the LM (fp32 ≈ 2.6 / 7.4 / 16.8 GB for 0.6B / 1.7B / 4B) and activations. The LM is allowed
# by RAM but off by default: it writes hundreds of tokens per song at a few tokens per second on CPU,
# so users turn it on deliberately (ACESTEP_INIT_LLM=1 or the node's toggle); when they do, the
# fastest allowed LM (0.6B) is the recommendation.
_CPU_LM_RAM_GB = {"0.6B": 20.0, "1.7B": 28.0, "4B": 40.0}


def _cpu_tier(ram_gb: float) -> Tier:
    allowed = tuple(size for size in LM_SIZES if ram_gb >= _CPU_LM_RAM_GB[size])
    batch = 1 if ram_gb < 24 else 2 if ram_gb < 48 else 4
    return Tier(
        name="cpu",
        label=f"CPU, {ram_gb:.0f} GB RAM",
        allowed_lms=allowed,
        recommended_lm="0.6B" if allowed else "none",
        max_duration_lm=600,
        max_duration_no_lm=600,
        max_batch_lm=batch,
        max_batch_no_lm=batch,
        offload_to_cpu=False,
        offload_dit_to_cpu=False,
        init_lm=False,
    )


# The XL DiT (~9 GB of bf16 weights, [M] GPU_COMPATIBILITY.md): it fits without offload from 20 GB,
# needs offload below that, and below 12 GB it does not fit at all, so it is refused unless the user
# insists (ACESTEP_ALLOW_XL=1). On the CPU, system RAM plays the part of VRAM.
XL_NO_OFFLOAD_GB = 20.0
XL_MIN_GB = 12.0


def is_xl_name(name: str | None) -> bool:
    """True for an XL DiT folder or file name (acestep-v15-xl-turbo, acestep_v1.5_xl_sft_bf16, ...)."""
    if not name:
        return False
    base = os.path.basename(str(name).rstrip("/\\")).lower()
    return re.search(r"(?<![a-z0-9])xl(?![a-z0-9])", base.replace("_", "-")) is not None


def xl_rule(total_gb: float, device_type: str) -> str:
    """"fits" | "offload" | "refuse": what the XL DiT needs on a device of `total_gb`."""
    if total_gb < XL_MIN_GB:
        return "refuse"
    if total_gb < XL_NO_OFFLOAD_GB and device_type not in ("cpu", "mps"):
        return "offload"
    return "fits"


# --------------------------------------------------------------------------------------------------
# Device memory
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceMemory:
    """What the policy needs to know about the compute device."""

    device_type: str  # "cuda" | "mps" | "xpu" | "cpu"
    name: str
    total_bytes: int
    free_bytes: int
    simulated: bool = False  # MAX_CUDA_VRAM / --simulate-vram
    bf16_supported: bool = True  # native bf16: False on pre-Ampere CUDA cards and CPUs without AVX512-BF16 / AMX

    @property
    def total_gb(self) -> float:
        return self.total_bytes / GIB

    @property
    def free_gb(self) -> float:
        return self.free_bytes / GIB

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["total_gb"] = round(self.total_gb, 2)
        out["free_gb"] = round(self.free_gb, 2)
        return out


def memory_from_values(device_type: str, total: int | float, free: int | float | None = None,
                       name: str = "", bf16_supported: bool | None = None) -> DeviceMemory:
    """A `DeviceMemory` from numbers the caller already has (e.g. ComfyUI's model management).

    `bf16_supported=None`: a CPU is probed (`cpu_has_native_bf16`), an accelerator assumed capable."""
    device_type = str(device_type).split(":")[0].lower()
    if device_type not in ("cuda", "mps", "xpu", "cpu"):
        # DirectML, NPU, ...: treat as a CUDA-like discrete accelerator.
        name = name or device_type
        device_type = "cuda"
    if bf16_supported is None:
        bf16_supported = cpu_has_native_bf16() if device_type == "cpu" else True
    total = int(total)
    free = total if free is None else int(min(int(free), total))
    return DeviceMemory(device_type, name or device_type, total, max(0, free), False, bf16_supported)


def memory_from_comfy(model_management: Any) -> DeviceMemory:
    """Total / free memory as ComfyUI sees it. The node side passes `comfy.model_management` in:
    the engine itself never imports ComfyUI. ComfyUI reports system RAM for CPU and MPS devices."""
    device = model_management.get_torch_device()
    device_type = getattr(device, "type", str(device))
    total = model_management.get_total_memory(device)
    free = model_management.get_free_memory(device)
    bf16 = None  # a CPU is probed by the engine's own rule
    should_use_bf16 = getattr(model_management, "should_use_bf16", None)
    if callable(should_use_bf16) and device_type != "cpu":
        try:
            bf16 = bool(should_use_bf16(device))
        except Exception:  # older signatures; bf16 is only a dtype hint
            bf16 = True
    return memory_from_values(device_type, total, free, name=f"{device} (ComfyUI)", bf16_supported=bf16)


def system_ram() -> tuple[int, int]:
    """(total, available) system RAM in bytes."""
    try:
        fields: dict[str, int] = {}
        with open("/proc/meminfo") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                fields[key] = int(rest.split()[0]) * 1024
        return fields["MemTotal"], fields.get("MemAvailable", fields.get("MemFree", fields["MemTotal"]))
    except (OSError, KeyError, ValueError, IndexError):
        pass
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        try:
            free = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
        except (ValueError, OSError):
            free = total
        return int(total), int(free)
    except (ValueError, OSError, AttributeError):
        return 0, 0


RAM_RESERVE = 2 << 30  # RAM a buffer or cache must leave free (or 15 % of RAM where that is more)


def spare_ram(total_bytes: int, available_bytes: int) -> int:
    """Bytes of RAM a buffer or cache may take now and still leave `RAM_RESERVE` (or 15 % of RAM)
    free, so it never pushes the machine into swap; 0 when nothing is to spare."""
    return max(0, available_bytes - max(RAM_RESERVE, int(0.15 * total_bytes)))


def _parse_gb(value: str | None) -> float | None:
    if value is None or not str(value).strip():
        return None
    try:
        gb = float(value)
    except ValueError:
        logger.warning("ignoring %r: not a number of GB", value)
        return None
    return gb if gb > 0 else None


def _default_device_type() -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    if hasattr(torch, "xpu") and torch.xpu.is_available():
        return "xpu"
    return "cpu"


def _measure(device_type: str, index: int) -> DeviceMemory:
    import torch

    if device_type == "cuda":
        free, total = torch.cuda.mem_get_info(index)
        props = torch.cuda.get_device_properties(index)
        return DeviceMemory("cuda", props.name, int(total), int(free), False,
                            bool(torch.cuda.is_bf16_supported()))
    if device_type == "xpu":
        props = torch.xpu.get_device_properties(index)
        total = int(props.total_memory)
        try:
            free = int(torch.xpu.mem_get_info(index)[0])
        except Exception:  # older IPEX builds
            free = total - int(torch.xpu.memory_reserved(index))
        return DeviceMemory("xpu", getattr(props, "name", "Intel XPU"), total, free)
    if device_type == "mps":
        # Unified memory: Metal's recommended working set is the budget for GPU work.
        try:
            total = int(torch.mps.recommended_max_memory())
        except Exception:
            total = int(system_ram()[0] * 0.75)
        try:
            used = int(torch.mps.driver_allocated_memory())
        except Exception:
            used = 0
        return DeviceMemory("mps", "Apple MPS", total, max(0, total - used))
    total, free = system_ram()
    return DeviceMemory("cpu", "CPU (system RAM)", total, free, False, cpu_has_native_bf16())


def detect_device_memory(device: Any = None, env: Mapping[str, str] | None = None) -> DeviceMemory:
    """Measure the compute device (`None` = CUDA > MPS > XPU > CPU).

    `MAX_CUDA_VRAM` / `MAX_MPS_VRAM` / `MAX_XPU_VRAM` (GB) simulate a smaller card of that type: the
    result reports the simulated size (never more than a real card has). On a machine without that
    device the simulation still works, so a policy can be inspected anywhere. Call
    `apply_memory_cap()` to also enforce a simulated CUDA size on the allocator.
    """
    env = os.environ if env is None else env
    index = 0
    if device is None:
        device_type = None
    else:
        text = str(device)
        device_type, _, idx = text.partition(":")
        index = int(idx) if idx.isdigit() else getattr(device, "index", None) or 0
        device_type = device_type.lower()

    if device_type in (None, "cuda", "mps", "xpu"):
        for sim_type, var in SIMULATE_ENV.items():
            if device_type not in (None, sim_type):
                continue
            gb = _parse_gb(env.get(var))
            if gb is not None:
                return _simulated(sim_type, gb, var, index)

    if device_type is None:
        device_type = _default_device_type()
    return _measure(device_type, index)


def _simulated(device_type: str, gb: float, source: str, index: int = 0) -> DeviceMemory:
    sim_bytes = int(gb * GIB)
    name = f"simulated {gb:g} GB {device_type.upper()} ({source})"
    real: DeviceMemory | None = None
    try:
        if _default_device_type() == device_type:
            real = _measure(device_type, index)
    except Exception:
        real = None
    if real is None:
        return DeviceMemory(device_type, name, sim_bytes, sim_bytes, True, True)
    total = min(sim_bytes, real.total_bytes)
    return DeviceMemory(device_type, f"{name} on {real.name}", total, min(real.free_bytes, total), True,
                        real.bf16_supported)


def simulated_memory(gb: float, device_type: str = "cuda") -> DeviceMemory:
    """A simulated card of `gb` GB (the doctor's `--simulate-vram`)."""
    if gb <= 0:
        raise InputError(f"--simulate-vram must be a positive number of GB, got {gb:g}")
    return _simulated(device_type, gb, "--simulate-vram")


def simulate_smaller(memory: DeviceMemory, env: Mapping[str, str] | None = None) -> DeviceMemory:
    """`memory` measured by someone else (ComfyUI), shrunk to `MAX_CUDA_VRAM` and friends when they are
    set for its device type, so a small card can be simulated through every front end alike."""
    env = os.environ if env is None else env
    var = SIMULATE_ENV.get(memory.device_type)
    gb = _parse_gb(env.get(var)) if var else None
    if gb is None:
        return memory
    total = min(int(gb * GIB), memory.total_bytes)
    return DeviceMemory(memory.device_type, f"simulated {gb:g} GB {memory.device_type.upper()} ({var}) on {memory.name}",
                        total, min(memory.free_bytes, total), True, memory.bf16_supported)


def apply_memory_cap(memory: DeviceMemory, context_gb: float = 0.5) -> bool:
    """Make a simulated CUDA size binding: cap this process's allocator at size minus CUDA context.

    Returns True when a cap was set. (The official code does the same with
    `set_per_process_memory_fraction`, so OOM behaviour of small cards can be tested on big ones.)
    """
    if not memory.simulated or memory.device_type != "cuda":
        return False
    import torch

    if not torch.cuda.is_available():
        return False
    real_total = torch.cuda.get_device_properties(0).total_memory
    budget = max(0.5 * GIB, memory.total_bytes - context_gb * GIB)
    if budget >= real_total:
        return False
    torch.cuda.set_per_process_memory_fraction(max(0.01, min(1.0, budget / real_total)))
    return True


# --------------------------------------------------------------------------------------------------
# The decision
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryDecision:
    """Everything the loader needs to know, and why. Logged and shown to the user."""

    device_type: str
    device_name: str
    total_gb: float
    free_gb: float
    simulated: bool
    tier: str
    lm_model: str  # "none" | "0.6B" | "1.7B" | "4B" (or the folder name of an LM whose size its name does not tell)
    lm_model_path: str | None  # the LM to load: ACESTEP_LM_MODEL_PATH when kept, or what loading.decide_load found
    init_lm: bool  # whether the LM is loaded and used by default
    allowed_lms: tuple[str, ...]
    offload_to_cpu: bool  # idle components wait on the CPU
    offload_dit_to_cpu: bool  # the DiT too (between stages)
    max_duration_s: int  # for the LM setting actually in effect
    max_batch: int
    max_duration_with_lm_s: int
    max_duration_without_lm_s: int
    max_batch_with_lm: int
    max_batch_without_lm: int
    vae_chunk_frames: int  # latent frames per VAE decode window (25 frames = 1 s)
    dtype: str  # suggestion for DiT / text encoder / VAE: "bfloat16" | "float16" | "float32"
    lm_dtype: str
    reasons: tuple[str, ...]
    dit_is_xl: bool = False  # the decision was made for an XL DiT
    dit_refusal: str | None = None  # why that DiT must not load here (None = it may)
    # ACESTEP_VAE_DECODE_CHUNK_SIZE fixed the window; else on the CPU it grows at decode time to what
    # the RAM then free holds (vae.cpu_decode_window)
    vae_chunk_fixed: bool = False
    # Why the LM is off, as a clause ("it is off by default on the CPU, ..."), so a front end whose user
    # then needs it can say why and what to set; None while it runs.
    lm_off_reason: str | None = None

    def check_dit(self) -> None:
        """Raise InsufficientMemoryError when the chosen DiT cannot run on this device."""
        if self.dit_refusal:
            from ..errors import InsufficientMemoryError

            raise InsufficientMemoryError(self.dit_refusal)

    @property
    def lm_folder(self) -> str | None:
        """Official checkpoint folder name of the chosen LM (the name itself for an LM of unknown size)."""
        if self.lm_model == "none":
            return None
        return LM_FOLDER_PREFIX + self.lm_model if self.lm_model in LM_SIZES else self.lm_model

    def settings(self) -> dict[str, Any]:
        """What the decision makes the engine do, without the device's name and the reasons: two front
        ends on the same card must agree on exactly this (tests/test_same_memory_decision.py)."""
        return {k: getattr(self, k) for k in (
            "device_type", "tier", "dtype", "lm_dtype", "offload_to_cpu", "offload_dit_to_cpu", "lm_model",
            "init_lm", "vae_chunk_frames", "vae_chunk_fixed", "max_duration_s", "max_batch", "dit_is_xl",
            "dit_refusal")}

    def pipeline_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `ACEStepPipeline.from_pretrained` that apply this decision
        (`loading.load_engine` passes them; docs/memory.md)."""
        return {"offload_to_cpu": self.offload_to_cpu, "offload_dit_to_cpu": self.offload_dit_to_cpu,
                "vae_chunk_frames": self.vae_chunk_frames, "vae_chunk_fixed": self.vae_chunk_fixed,
                "dtype": self.dtype}

    def summary(self) -> str:
        offload = ("CPU+DiT" if self.offload_dit_to_cpu else "CPU") if self.offload_to_cpu else "none"
        lm = f"LM {self.lm_model} ({'on' if self.init_lm else 'off'})" if self.lm_model != "none" else "LM none"
        sim = " simulated" if self.simulated else ""
        xl = (" [XL refused]" if self.dit_refusal else " [XL]") if self.dit_is_xl else ""
        return (f"{self.device_type}{sim} {self.total_gb:.1f} GB → {self.tier}{xl}: {lm}, offload {offload}, "
                f"max {self.max_duration_s} s x{self.max_batch}, VAE chunk {self.vae_chunk_frames}, {self.dtype}")

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["allowed_lms"] = list(self.allowed_lms)
        out["reasons"] = list(self.reasons)
        out["lm_folder"] = self.lm_folder
        out["summary"] = self.summary()
        return out


def lm_size_from_name(name: str | None) -> str | None:
    """"0.6B" / "1.7B" / "4B" from an LM folder name, file name or path; None if unrecognised."""
    if not name:
        return None
    base = os.path.basename(str(name).rstrip("/\\")).lower()
    match = re.search(r"(?<![\d.])(0\.6|1\.7|4)b(?![a-z0-9])", base)
    if not match:
        return None
    return {"0.6": "0.6B", "1.7": "1.7B", "4": "4B"}[match.group(1)]


def _env_bool(env: Mapping[str, str], name: str, reasons: list[str]) -> bool | None:
    try:
        return env_flag(name, None, "", env)
    except InputError:
        reasons.append(f"{name}={env.get(name)!r} is not a yes/no value (use 1/0, true/false or auto); ignored.")
        return None


def vae_chunk_frames_for(device_type: str, free_bytes: int, total_bytes: int | None = None) -> int:
    """VAE decode window in latent frames from the memory free right now ([M] handler rule;
    XPU follows the CUDA table)."""
    from ..vae import decode_chunk_frames

    return decode_chunk_frames(free_bytes, "cuda" if device_type == "xpu" else device_type)


def decide(memory: DeviceMemory, env: Mapping[str, str] | None = None, requested_lm: str | None = None,
           available_lms: list[str] | None = None, dit: str | None = None) -> MemoryDecision:
    """The memory decision for `memory`, honouring the user's overrides.

    - `requested_lm`: an LM size or folder/path the caller asks for ("none" = no LM, "auto" or None =
      the tier's choice); it takes precedence over `ACESTEP_LM_MODEL_PATH`.
    - `available_lms`: LM sizes (or folder names) found on disk; None = do not check.
    - `dit`: the DiT folder / file name or path about to load; an XL one brings the XL rules.
    - `env`: `ACESTEP_INIT_LLM`, `ACESTEP_LM_MODEL_PATH`, `ACESTEP_OFFLOAD_TO_CPU`,
      `ACESTEP_OFFLOAD_DIT_TO_CPU`, `ACESTEP_VAE_DECODE_CHUNK_SIZE`, `ACESTEP_ALLOW_XL`, `ACESTEP_CPU_BF16` (dtypes.py).
    An LM the tier cannot hold falls back to the tier's recommendation, with a reason saying so.
    """
    env = os.environ if env is None else env
    reasons: list[str] = []
    sim = " (simulated)" if memory.simulated else ""

    if memory.device_type == "cpu":
        tier = _cpu_tier(memory.total_gb)
        reasons.append(
            f"No GPU: running on the CPU with {memory.total_gb:.1f} GB RAM ({memory.free_gb:.1f} GB free); "
            f"everything runs, just slowly."
        )
    else:
        tier = tier_for_gb(memory.total_gb)
        reasons.append(
            f"{memory.device_type.upper()} device {memory.name!r}{sim}: {memory.total_gb:.1f} GB total, "
            f"{memory.free_gb:.1f} GB free → {tier.name} ({tier.label})."
        )
        if memory.total_bytes and memory.free_bytes < 0.5 * memory.total_bytes:
            reasons.append(
                f"Only {memory.free_gb:.1f} of {memory.total_gb:.1f} GB are free right now (other programs or "
                f"models hold the rest); the tier is chosen from the card size, so close them if you run out."
            )

    # ---- which LM, and does it run -----------------------------------------------------------
    allowed = tier.allowed_lms
    init_override = _env_bool(env, ENV_INIT_LLM, reasons)

    # 1. What the caller or the environment asks for (the explicit argument wins).
    request = requested_lm.strip() if isinstance(requested_lm, str) else ""
    env_path = (env.get(ENV_LM_MODEL_PATH) or "").strip()
    asked_size: str | None = None
    asked_path: str | None = None
    asked_by = ""
    lm_off_by_request = False
    if request and request.lower() != "auto":
        if request.lower() == "none":
            lm_off_by_request = True
        else:
            asked_by = f"The requested LM {request!r}"
            asked_size = request if request in LM_SIZES else lm_size_from_name(request)
            asked_path = None if request in LM_SIZES else request
    elif env_path:
        asked_by = f"{ENV_LM_MODEL_PATH}={env_path!r}"
        asked_size = lm_size_from_name(env_path)
        asked_path = env_path
    if asked_by and asked_size is None:
        reasons.append(f"{asked_by} is not a 0.6B / 1.7B / 4B LM; using the tier's choice.")
        asked_path = None

    # 2. Does the LM run?
    if lm_off_by_request:
        init_lm = False
        reasons.append("The LM is off because it was requested so.")
    elif init_override is not None:
        init_lm = init_override
        reasons.append(f"{ENV_INIT_LLM} turns the LM {'on' if init_lm else 'off'}.")
    else:
        init_lm = tier.init_lm

    # 3. Which size.
    lm_path: str | None = None
    if allowed:
        if asked_size in allowed:
            chosen, lm_path = asked_size, asked_path
        else:
            chosen = tier.recommended_lm
            if asked_size is not None:
                reasons.append(f"{asked_by} asks for the {asked_size} LM, which {tier.name} ({tier.label}) "
                               f"cannot hold; using the {chosen} LM instead (allowed: {', '.join(allowed)}).")
    elif init_lm:
        chosen = "0.6B"
        lm_path = asked_path if asked_size == "0.6B" else None
        reasons.append(f"The LM is forced on although {tier.name} ({tier.label}) has no room for one; using the "
                       f"smallest (0.6B) with offload. Expect it to be slow or to run out of memory.")
    else:
        chosen = "none"
        if asked_size is not None:
            reasons.append(f"{tier.name} ({tier.label}) holds no LM, so {asked_by} stays unused; "
                           f"set {ENV_INIT_LLM}=1 to force it.")

    # 4. Is it on disk?
    lm_off_reason: str | None = None
    if available_lms is not None and chosen != "none":
        disk = {lm_size_from_name(n) or (n if n in LM_SIZES else None) for n in available_lms} - {None}
        if chosen not in disk:
            usable = [s for s in LM_SIZES if s in disk and (s in allowed or (not allowed and s == "0.6B"))]
            if usable:
                pick = usable[0] if memory.device_type == "cpu" else usable[-1]
                reasons.append(f"The {chosen} LM is not in the checkpoint folder; using the {pick} LM found "
                               f"there (download {LM_FOLDER_PREFIX}{chosen} for the recommended one).")
                chosen, lm_path = pick, None
            elif init_lm:
                reasons.append(f"No usable LM checkpoint found (expected {LM_FOLDER_PREFIX}{chosen}); the LM "
                               f"stays off until one is downloaded.")
                init_lm = False
                lm_off_reason = f"no 5 Hz LM checkpoint is installed (expected {LM_FOLDER_PREFIX}{chosen})"

    if chosen == "none":
        reasons.append(f"No LM: {tier.name} ({tier.label}) has no room for one; text2music runs without "
                       f"'thinking'.")
    elif init_lm:
        reasons.append(f"The {chosen} LM runs (allowed here: {', '.join(allowed) or 'none by default'}).")
    elif memory.device_type == "cpu" and init_override is None and not lm_off_by_request:
        reasons.append(f"The LM is off by default on the CPU (it is slow there); set {ENV_INIT_LLM}=1 to use "
                       f"the {chosen} LM.")
    if not init_lm and lm_off_reason is None:
        if lm_off_by_request:
            lm_off_reason = "it was set to none"
        elif init_override is False:
            lm_off_reason = f"{ENV_INIT_LLM} turns it off"
        elif chosen == "none":
            lm_off_reason = f"{tier.name} ({tier.label}) has no room for one"
        elif memory.device_type == "cpu":
            lm_off_reason = "it is off by default on the CPU, where it is slow"
        else:
            lm_off_reason = f"{tier.name} ({tier.label}) leaves it off by default"

    # ---- offload -----------------------------------------------------------------------------
    offload = tier.offload_to_cpu
    offload_dit = tier.offload_dit_to_cpu
    if memory.device_type == "mps":
        offload = offload_dit = False
        reasons.append("Apple unified memory: no CPU offload (moving weights would only copy them).")
    env_offload = _env_bool(env, ENV_OFFLOAD_TO_CPU, reasons)
    env_offload_dit = _env_bool(env, ENV_OFFLOAD_DIT_TO_CPU, reasons)
    if memory.device_type == "cpu":
        offload = offload_dit = False
        if env_offload or env_offload_dit:
            reasons.append("Offload settings are ignored on the CPU (the weights already live there).")
    else:
        if env_offload is not None:
            offload = env_offload
            reasons.append(f"{ENV_OFFLOAD_TO_CPU} sets CPU offload {'on' if offload else 'off'}.")
        if env_offload_dit is not None:
            offload_dit = env_offload_dit
            reasons.append(f"{ENV_OFFLOAD_DIT_TO_CPU} sets DiT offload {'on' if offload_dit else 'off'}.")
        if offload_dit and not offload:
            offload_dit = False
            if env_offload_dit:
                reasons.append("DiT offload needs CPU offload, which is off; the DiT stays on the device.")
    is_xl = is_xl_name(dit)
    dit_refusal = None
    if is_xl:
        offload, offload_dit, dit_refusal = _apply_xl_rule(memory, env, dit, offload, offload_dit, env_offload, reasons)
    if memory.device_type != "cpu":
        if offload:
            reasons.append(
                "CPU offload: idle components wait on the CPU and move to the device only while they run "
                f"({'LM, text encoder, DiT and VAE' if offload_dit else 'LM, text encoder and VAE; the DiT stays'})."
            )
        else:
            reasons.append("No offload: every component stays on the device (fastest).")

    # ---- limits, VAE, dtype -------------------------------------------------------------------
    max_duration = tier.max_duration_lm if init_lm else tier.max_duration_no_lm
    max_batch = tier.max_batch_lm if init_lm else tier.max_batch_no_lm
    reasons.append(f"Limits: up to {max_duration} s and batch {max_batch} "
                   f"({'with' if init_lm else 'without'} the LM).")

    vae_chunk = vae_chunk_frames_for(memory.device_type, memory.free_bytes, memory.total_bytes)
    vae_chunk_fixed = False
    raw_chunk = (env.get(ENV_VAE_CHUNK) or "").strip()
    if raw_chunk and raw_chunk.isdigit() and int(raw_chunk) > 0:
        vae_chunk, vae_chunk_fixed = int(raw_chunk), True
        reasons.append(f"{ENV_VAE_CHUNK} sets the VAE decode window to {vae_chunk} frames.")
    else:
        if raw_chunk:
            reasons.append(f"{ENV_VAE_CHUNK}={raw_chunk!r} is not a positive whole number; ignored.")
        grows = (" (at least: when the decode starts the window grows to what the free RAM holds, up to "
                 "1024 frames, so a song of up to 41 s decodes in one pass)") if memory.device_type == "cpu" else ""
        reasons.append(f"VAE decodes {vae_chunk} latent frames ({vae_chunk / 25:.1f} s) per window{grows}; on "
                       f"out-of-memory it halves the window, then decodes on the CPU.")

    dtype, lm_dtype, dtype_reason = auto_dtypes(memory.device_type, memory.bf16_supported, env)
    reasons.append(dtype_reason)

    decision = MemoryDecision(
        device_type=memory.device_type,
        device_name=memory.name,
        total_gb=round(memory.total_gb, 2),
        free_gb=round(memory.free_gb, 2),
        simulated=memory.simulated,
        tier=tier.name,
        lm_model=chosen,
        lm_model_path=lm_path,
        init_lm=init_lm,
        allowed_lms=allowed,
        offload_to_cpu=offload,
        offload_dit_to_cpu=offload_dit,
        max_duration_s=max_duration,
        max_batch=max_batch,
        max_duration_with_lm_s=tier.max_duration_lm,
        max_duration_without_lm_s=tier.max_duration_no_lm,
        max_batch_with_lm=tier.max_batch_lm,
        max_batch_without_lm=tier.max_batch_no_lm,
        vae_chunk_frames=vae_chunk,
        vae_chunk_fixed=vae_chunk_fixed,
        dtype=dtype,
        lm_dtype=lm_dtype,
        reasons=tuple(reasons),
        dit_is_xl=is_xl,
        dit_refusal=dit_refusal,
        lm_off_reason=lm_off_reason,
    )
    return decision  # the loaders log the final decision, with the user's choices applied


def _apply_xl_rule(memory: DeviceMemory, env: Mapping[str, str], dit: str, offload: bool, offload_dit: bool,
                   env_offload: bool | None, reasons: list[str]) -> tuple[bool, bool, str | None]:
    """(offload, DiT offload, refusal) for the XL DiT `dit` on `memory`."""
    name = os.path.basename(str(dit).rstrip("/\\"))
    what = "RAM" if memory.device_type == "cpu" else "memory"
    rule = xl_rule(memory.total_gb, memory.device_type)
    if rule == "refuse":
        message = (f"The XL DiT {name} needs at least {XL_MIN_GB:g} GB of {what} (even with offload), and this "
                   f"{memory.device_type} device has {memory.total_gb:.1f} GB.")
        if _env_bool(env, ENV_ALLOW_XL, reasons):
            reasons.append(f"{message} {ENV_ALLOW_XL}=1: loading it anyway"
                           f"{' with CPU and DiT offload' if memory.device_type not in ('cpu', 'mps') else ''}; "
                           "expect it to run out of memory.")
            if memory.device_type not in ("cpu", "mps"):
                return True, True, None
            return offload, offload_dit, None
        refusal = (f"{message} Use a 2B model (acestep-v15-turbo, ComfyUI acestep_v1.5_turbo.safetensors), "
                   f"or set {ENV_ALLOW_XL}=1 to try the XL model anyway.")
        reasons.append(refusal)
        return offload, offload_dit, refusal
    if rule == "offload":
        if env_offload is False:
            reasons.append(f"The XL DiT {name} needs CPU offload below {XL_NO_OFFLOAD_GB:g} GB, but "
                           f"{ENV_OFFLOAD_TO_CPU} turns it off; expect out-of-memory errors.")
            return offload, offload_dit, None
        reasons.append(f"The XL DiT {name} needs CPU offload below {XL_NO_OFFLOAD_GB:g} GB: turned on.")
        return True, offload_dit, None
    reasons.append(f"The XL DiT {name} fits in {memory.total_gb:.1f} GB"
                   f"{'' if memory.device_type in ('cpu', 'mps') else ' without offload'}.")
    return offload, offload_dit, None


def clamp_request(decision: MemoryDecision, duration: float | None, batch_size: int | None,
                  ) -> tuple[float | None, int | None, list[str]]:
    """Clamp a request's duration (s) and batch size to the decision's limits, with messages.

    `None` or a non-positive duration means "let the engine choose" and is passed through.
    """
    messages: list[str] = []
    if duration is not None and duration > decision.max_duration_s:
        messages.append(
            f"Duration {duration:g} s is more than this machine's {decision.tier} limit of "
            f"{decision.max_duration_s} s; generating {decision.max_duration_s} s instead."
        )
        duration = float(decision.max_duration_s)
    if batch_size is not None and batch_size > decision.max_batch:
        messages.append(
            f"Batch size {batch_size} is more than this machine's {decision.tier} limit of "
            f"{decision.max_batch}; generating {decision.max_batch} instead."
        )
        batch_size = decision.max_batch
    return duration, batch_size, messages  # each front end shows them once, its own way
