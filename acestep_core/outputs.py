"""Output files: names inside the chosen output directory, latents as safetensors."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from .errors import InputError

LATENTS_KEY = "latents"
COMFY_LATENT_KEY = "latent_tensor"  # ComfyUI's SaveLatent: [B, 64, T]


def contained_path(out_dir: Path, name: str | Path) -> Path:
    """`name` resolved inside `out_dir`; anything that would land outside is refused."""
    root = Path(out_dir).resolve()
    candidate = Path(name)
    target = (candidate if candidate.is_absolute() else root / candidate).resolve()
    if target != root and root not in target.parents:
        raise InputError(f"refusing to write {name}: outputs stay inside the output directory {root}")
    return target


def safe_stem(text: str, fallback: str = "acestep") -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")[:60]
    return stem or fallback


def next_free_index(out_dir: Path, stem: str) -> int:
    pattern = re.compile(re.escape(stem) + r"_(\d{5})")
    used = [int(m.group(1)) for p in Path(out_dir).iterdir() if (m := pattern.match(p.name))]
    return max(used, default=0) + 1


def save_latents(path: Path, latents: torch.Tensor) -> Path:
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".partial")
    save_file({LATENTS_KEY: latents.float().contiguous().cpu()}, str(tmp))
    tmp.replace(path)
    return path


def load_latents(path: str | Path) -> torch.Tensor:
    """[B, T, 64] from our `latents` key, or from ComfyUI's `latent_tensor` [B, 64, T]."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise InputError(f"latents file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            if LATENTS_KEY in keys:
                latents = f.get_tensor(LATENTS_KEY)
            elif COMFY_LATENT_KEY in keys:
                latents = f.get_tensor(COMFY_LATENT_KEY).transpose(1, 2)
            else:
                raise InputError(f"{path} holds no '{LATENTS_KEY}' tensor (keys: {keys[:5]})")
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"cannot read latents from {path}: {exc}") from exc
    if latents.ndim != 3 or latents.shape[-1] != 64:
        raise InputError(f"{path}: latents must be [batch, frames, 64], found {list(latents.shape)}")
    return latents.float()
