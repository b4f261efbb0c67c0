"""Output files: names inside the chosen output directory, latents as safetensors."""

from __future__ import annotations

import os
import re
import tempfile
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


def check_output_dir(out_dir: Path) -> Path:
    """The output folder, or the folder it will be created in, must be a writable folder."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"the output folder {out_dir} is a file: give --out a folder (it is created if needed)")
    existing = out_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"cannot create the output folder {out_dir}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"the output folder {existing} is not writable: choose another --out")
    return out_dir


def check_new_file(path: Path, overwrite: bool = False, flag: str = "--overwrite") -> Path:
    """An output named by the user: refuse to replace an existing file unless told to."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder; give a file name")
    if path.exists() and not overwrite:
        raise InputError(f"{path} already exists: choose another name, or add {flag} to replace it")
    return path


def publish(tmp: Path, target: Path, overwrite: bool = False) -> Path:
    """Move a finished temporary file into place. Without `overwrite` this never replaces a file (even
    one that appeared meanwhile); with it an existing file keeps its permission bits."""
    from .audio_io import _current_umask

    tmp, target = Path(tmp), Path(target)
    try:
        mode = target.stat().st_mode & 0o7777 if target.exists() else 0o666 & ~_current_umask()
        os.chmod(tmp, mode)
        if overwrite:
            os.replace(tmp, target)
        else:
            try:
                os.link(tmp, target)  # fails when the name is taken: no clobbering
            except FileExistsError:
                raise InputError(f"{target} already exists: choose another name, or add --overwrite") from None
            os.unlink(tmp)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


def save_latents(path: Path, latents: torch.Tensor, overwrite: bool = False) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    check_new_file(path, overwrite)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    save_file({LATENTS_KEY: latents.float().contiguous().cpu()}, tmp)
    return publish(Path(tmp), path, overwrite)


def write_new_text(path: Path, text: str, overwrite: bool = False) -> Path:
    """A small text output (the JSON beside each song), with the same no-clobber rule."""
    path = Path(path)
    check_new_file(path, overwrite)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    return publish(Path(tmp), path, overwrite)


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
