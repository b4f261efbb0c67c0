"""LoRA and LoKr adapters for the DiT decoder: reading the three file formats, checking that they
fit, and patching them in for a generation (see docs/adapters.md)."""

from .formats import FORMATS, LOKR_WEIGHTS, PEFT_CONFIG, PEFT_WEIGHTS, Adapter, load_adapter
from .patch import DecoderAdapters, ScaledAdapter, check_adapter_fits, decoder_adapters

__all__ = ["FORMATS", "LOKR_WEIGHTS", "PEFT_CONFIG", "PEFT_WEIGHTS", "Adapter", "DecoderAdapters", "ScaledAdapter",
           "check_adapter_fits", "decoder_adapters", "load_adapter", "scaled_adapters"]


def scaled_adapters(paths, scales=None) -> list[ScaledAdapter]:
    """Load adapters from paths, one scale per path (default 1.0 each)."""
    paths = list(paths or [])
    scales = [1.0] * len(paths) if scales is None else list(scales)
    if len(scales) != len(paths):
        from ..errors import AdapterError

        raise AdapterError(f"give one scale per adapter: {len(paths)} adapter(s), {len(scales)} scale(s)")
    return [ScaledAdapter(load_adapter(p), s) for p, s in zip(paths, scales)]
