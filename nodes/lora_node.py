"""ACE-Step LoRA: a LoRA or LoKr adapter from ComfyUI's loras folder on the model's DiT decoder.

The node returns a new model value that shares the weights of the one it got and adds one adapter
to its list; the engine patches the list in for each generation only. So nodes chain (adapters
stack), and two branches of one graph with different adapters stay independent.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Optional

from ..acestep_core.constants import ADAPTER_SCALE_MAX
from ..acestep_core.errors import InputError
from . import model_files
from .host import io
from .widgets import CATEGORY, MODEL

LORA_FOLDER_KEY = "loras"
PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
SAFETENSORS = ".safetensors"
_CACHE_SIZE = 16
_cache: "OrderedDict[tuple, object]" = OrderedDict()
_cache_lock = threading.Lock()


def _roots() -> list[Path]:
    return [Path(r) for r in model_files._folder_paths(LORA_FOLDER_KEY)]


def lora_choices() -> list[str]:
    """Adapter files (sub-folders included) and official PEFT folders under models/loras."""
    found = set()
    for root in _roots():
        if not root.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            rel = Path(dirpath).relative_to(root)
            if PEFT_CONFIG in filenames and rel != Path("."):
                found.add(rel.as_posix())  # the folder is the adapter; its files are not choices
                dirnames[:] = []
                continue
            dirnames.sort()
            found.update((rel / f).as_posix() for f in filenames if f.lower().endswith(SAFETENSORS))
    return sorted(found)


def resolve_lora(choice: str) -> Optional[Path]:
    """The adapter a choice names, inside one of the loras folders (never outside it)."""
    for root in _roots():
        # Lexical containment: no '..' out of the folder, while symlinks placed in it still work.
        base = Path(os.path.abspath(root))
        target = Path(os.path.normpath(base / choice))
        if target != base and base in target.parents and target.exists():
            # The weights file of a PEFT folder means the folder: its config carries lora_alpha.
            if target.name == PEFT_WEIGHTS and (target.parent / PEFT_CONFIG).is_file():
                return target.parent
            return target
    return None


def _stamp(path: Path) -> tuple:
    files = [path / PEFT_CONFIG, path / PEFT_WEIGHTS] if path.is_dir() else [path]
    return tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files if f.exists())


def cached_adapter(path: Path, name: str):
    """Read an adapter once per file version (graphs re-run with the same adapters)."""
    from ..acestep_core.adapters import load_adapter

    key = (name, _stamp(path))
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    adapter = load_adapter(path, name)
    with _cache_lock:
        _cache[key] = adapter
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return adapter


class LoadLoRA(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ACE15S_LoRA",
            display_name="ACE-Step LoRA",
            category=CATEGORY,
            description="Puts a LoRA or LoKr adapter from models/loras on the DiT decoder: an official PEFT "
                        "folder (adapter_config.json + adapter_model.safetensors), a ComfyUI LoRA file or a "
                        "LoKr file. Strength 1 is the strength the official ACE-Step handler gives it. Chain "
                        "several to stack them; the incoming model is left as it was.",
            inputs=[MODEL.Input("model"),
                    io.Combo.Input("lora", options=lora_choices(),
                                   tooltip="A file or PEFT folder in models/loras (sub-folders included)."),
                    io.Float.Input("strength", default=1.0, min=-ADAPTER_SCALE_MAX, max=ADAPTER_SCALE_MAX, step=0.01,
                                   tooltip="1 = as trained (PEFT: lora_alpha / r). 0 = off; negative inverts.")],
            outputs=[MODEL.Output("model", display_name="model")],
        )

    @classmethod
    def execute(cls, model, lora, strength) -> io.NodeOutput:
        from ..acestep_core.adapters import ScaledAdapter, check_adapter_fits

        path = resolve_lora(lora)
        if path is None:
            raise InputError(f"LoRA '{lora}' not found in models/loras; put the file (or the PEFT folder) there "
                             "and refresh")
        name = lora[: -len(SAFETENSORS)] if lora.lower().endswith(SAFETENSORS) else lora
        adapter = cached_adapter(path, name)
        check_adapter_fits(model.pipeline.dit.transformer, adapter)
        return io.NodeOutput(model.with_adapter(ScaledAdapter(adapter, float(strength))))
