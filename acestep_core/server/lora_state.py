"""The REST server's LoRA / LoKr state (/v1/lora/*): which adapters are loaded, at what scale,
and whether they are on. Jobs take a snapshot when they are queued, so a change never reaches a
job that is already queued or running."""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Optional, Sequence

from ..adapters import Adapter, ScaledAdapter
from ..errors import AdapterError
from .files import is_within, unusable
from .params import FieldError


class AdapterState:
    def __init__(self, lora_dirs: Sequence[Path] = ()):
        # Where /v1/lora/load may read (ACESTEP_LORA_DIR; inside ComfyUI every 'loras' folder it knows).
        self.lora_dirs = tuple(Path(d).expanduser().resolve() for d in lora_dirs)
        self._lock = threading.Lock()
        self._adapters: dict[str, Adapter] = {}
        self._scales: dict[str, float] = {}
        self.use_lora = False
        self.active: Optional[str] = None
        self.last_scale = 1.0
        self.adapter_type: Optional[str] = None

    def resolve(self, raw: str) -> Path:
        """`raw` (relative to a LoRA folder, or absolute) inside a LoRA folder; PermissionError otherwise.
        A relative name is looked up in each folder in turn (the first folder when none holds it)."""
        if not self.lora_dirs:
            raise PermissionError("loading adapters is off on this server: start it with ACESTEP_LORA_DIR set "
                                  "to the folder holding the adapters")
        if "\x00" in raw:
            raise FieldError("lora_path", "contains a NUL byte; give the adapter's name as plain text")
        candidate = Path(raw).expanduser()
        lexical = [candidate] if candidate.is_absolute() else [folder / candidate for folder in self.lora_dirs]
        if any(unusable(path) for path in lexical):
            raise FieldError("lora_path", "is not a name this server's file system can read (a name too long?)")
        if candidate.is_absolute():
            target = candidate.resolve()
            if any(is_within(target, folder) for folder in self.lora_dirs):
                return target
        else:
            targets = [(folder / candidate).resolve() for folder in self.lora_dirs]
            inside = [t for t, folder in zip(targets, self.lora_dirs) if is_within(t, folder)]
            if len(inside) == len(targets):
                return next((t for t in inside if t.exists()), inside[0])
        folders = ", ".join(str(folder) for folder in self.lora_dirs)
        raise PermissionError(f"{raw} is outside the LoRA folder{'s' if len(self.lora_dirs) > 1 else ''} {folders}")

    def add(self, name: str, adapter: Adapter) -> None:
        with self._lock:
            if name in self._adapters:
                raise AdapterError(f"Adapter name already in use: {name}. Use a different adapter_name or "
                                   "unload first.")
            self._adapters[name] = adapter
            self._scales[name] = 1.0
            self.use_lora = True
            self.active = name
            self.adapter_type = adapter.kind

    def clear(self) -> bool:
        with self._lock:
            had = bool(self._adapters)
            self._adapters.clear()
            self._scales.clear()
            self.use_lora, self.active, self.last_scale, self.adapter_type = False, None, 1.0, None
            return had

    @property
    def loaded(self) -> bool:
        return bool(self._adapters)

    def set_use(self, use: bool) -> None:
        with self._lock:
            self.use_lora = bool(use)

    def set_scale(self, scale: float, name: Optional[str] = None) -> tuple[str, float]:
        """Clamp to 0–1 like the official API; returns (adapter name, scale applied)."""
        if not math.isfinite(scale):
            raise AdapterError("Invalid LoRA scale: please provide a finite numeric value between 0 and 1.")
        with self._lock:
            target = name or self.active
            if target not in self._adapters:
                raise AdapterError(f"Unknown adapter: {target}. Loaded: {list(self._adapters)}")
            value = max(0.0, min(1.0, float(scale)))
            self._scales[target] = value
            self.last_scale = value
            self.active = target
            return target, value

    def label(self, name: Optional[str] = None) -> str:
        adapter = self._adapters.get(name or self.active or "")
        return "LoKr" if adapter is not None and adapter.kind == "lokr" else "LoRA"

    def status(self) -> dict:
        with self._lock:
            return {
                "lora_loaded": bool(self._adapters),
                "use_lora": self.use_lora,
                "lora_scale": self.last_scale,
                "adapter_type": self.adapter_type,
                "scales": dict(self._scales),
                "active_adapter": self.active,
                "adapters": list(self._adapters),
                "synthetic_default_mode": False,
            }

    def snapshot(self) -> list[ScaledAdapter]:
        """What a job queued now runs with: every loaded adapter at its scale, or none when off."""
        with self._lock:
            if not self.use_lora:
                return []
            return [ScaledAdapter(a, self._scales[n]) for n, a in self._adapters.items()]
