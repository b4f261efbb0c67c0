"""The one place the pack touches ComfyUI's own modules.

Everything ComfyUI-specific (V3 node API, memory management, progress, folders, interruption)
is imported here, so the rest of nodes/ reads like ordinary code and the test harness knows
exactly which host surface it has to provide.
"""

from __future__ import annotations

import comfy.model_management as model_management
import comfy.model_patcher as model_patcher
import comfy.utils as comfy_utils
import folder_paths
from comfy_api.latest import ComfyExtension, io, ui  # noqa: F401  (re-exported)

InterruptProcessingException = model_management.InterruptProcessingException


def raise_if_interrupted() -> None:
    """Raise ComfyUI's interrupt exception when the user pressed Cancel (clears the flag)."""
    model_management.throw_exception_if_processing_interrupted()


def is_interrupted() -> bool:
    return bool(model_management.processing_interrupted())


class StageProgress:
    """A ProgressBar for one stage (LM tokens, DiT steps) that also honours Cancel.

    The engine calls `update(step, total)` once per token / step; ComfyUI's progress hook
    raises InterruptProcessingException inside that call when the user cancelled, which
    unwinds straight through the engine loop.
    """

    def __init__(self, node_id=None):
        self.node_id = node_id
        self._bar = None
        self._total = None

    def __call__(self, step: int, total: int) -> None:
        raise_if_interrupted()
        total = max(int(total), 1)
        if self._bar is None or self._total != total:
            self._bar = comfy_utils.ProgressBar(total, node_id=self.node_id)
            self._total = total
        self._bar.update_absolute(min(int(step), total), total)


def compute_device():
    return model_management.get_torch_device()


def intermediate_device():
    return model_management.intermediate_device()


def offload_device():
    return model_management.unet_offload_device()


def memory_of(device) -> tuple[int, int]:
    """(total, free) bytes of `device` as ComfyUI sees them (system RAM on CPU)."""
    return (int(model_management.get_total_memory(device)), int(model_management.get_free_memory(device)))


def make_patcher(module, load_device, offload_device_):
    return model_patcher.ModelPatcher(module, load_device=load_device, offload_device=offload_device_)


def load_models(patchers, memory_required: int = 0) -> None:
    """Ask ComfyUI to make room for (and move) our patchers; it may evict other models first.

    force_full_load: our modules are plain torch layers, not comfy.ops, so a partial (lowvram)
    load that leaves some weights on the CPU would break them.
    """
    if patchers:
        model_management.load_models_gpu(list(patchers), memory_required=memory_required, force_full_load=True)


def soft_empty_cache() -> None:
    model_management.soft_empty_cache()


def unload_models(patchers) -> None:
    """Move our patchers back to their offload device now (offload=on)."""
    mm = model_management
    for patcher in patchers:
        if hasattr(mm, "unload_model_and_clones"):
            mm.unload_model_and_clones(patcher, unload_additional_models=False)
        else:  # older ComfyUI: find it in the loaded list
            for i in reversed(range(len(mm.current_loaded_models))):
                loaded = mm.current_loaded_models[i]
                if getattr(loaded, "model", None) is patcher:
                    loaded.model_unload()
                    mm.current_loaded_models.pop(i)


def show_text(node_id, text: str) -> None:
    """Text under the node in the editor: ComfyUI's progress text, as its own GetImageSize shows sizes.
    A no-op outside a server, for a node without an id, or on a ComfyUI without progress text."""
    if node_id is None:
        return
    try:
        from server import PromptServer
    except ImportError:
        return
    send = getattr(getattr(PromptServer, "instance", None), "send_progress_text", None)
    if send is not None:
        send(text, node_id)


def metadata_disabled() -> bool:
    """ComfyUI's --disable-metadata flag."""
    try:
        from comfy.cli_args import args
    except ImportError:
        return False
    return bool(getattr(args, "disable_metadata", False))


def bundled_qwen_tokenizer_dir():
    """ComfyUI ships the Qwen BPE files (vocab.json + merges.txt) for its own ACE-Step support.

    Single-file text encoders / LMs (ComfyUI repacks) carry no tokenizer, so this is what they use
    unless an official folder with tokenizer.json is installed. None when not found.
    """
    import os

    try:
        import comfy

        roots = list(getattr(comfy, "__path__", []))  # a namespace package in some versions
    except ImportError:
        return None
    folder = next((os.path.join(r, "text_encoders", "qwen25_tokenizer") for r in roots), "")
    return folder if os.path.isfile(os.path.join(folder, "vocab.json")) else None
