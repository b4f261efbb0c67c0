"""Memory policy (VRAM tiers), component offload and memory-safe fallbacks.

    from acestep_core.memory import detect_device_memory, decide
    decision = decide(detect_device_memory())          # logged; decision.summary(), decision.reasons

Front ends do not call `decide` themselves: `acestep_core.loading.decide_load` applies the user's
choices to it and `load_engine` loads by it (docs/memory.md).
"""

from .offload import OffloadManager, empty_device_cache
from .policy import (DeviceMemory, MemoryDecision, apply_memory_cap, clamp_request, decide,
                     detect_device_memory, memory_from_comfy, memory_from_values, simulate_smaller, simulated_memory,
                     vae_chunk_frames_for)
from .vae_fallback import (decode_fn_for_vae, decode_with_fallback, is_out_of_memory, official_vae_decode_fn,
                           tiled_decode)

__all__ = [
    "DeviceMemory", "MemoryDecision", "OffloadManager", "apply_memory_cap", "clamp_request", "decide",
    "decode_fn_for_vae", "decode_with_fallback", "detect_device_memory", "empty_device_cache",
    "is_out_of_memory", "memory_from_comfy", "official_vae_decode_fn", "memory_from_values", "simulate_smaller", "simulated_memory", "tiled_decode",
    "vae_chunk_frames_for",
]
