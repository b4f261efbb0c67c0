"""Find ACE-Step files in ComfyUI's model folders without ever raising.

Two layouts are supported side by side:
- official folders (as downloaded from the ACE-Step repositories) under models/acestep/:
  acestep-v15-turbo/, vae/, Qwen3-Embedding-0.6B/, acestep-5Hz-lm-1.7B/ ...
- ComfyUI repacks: diffusion_models/acestep_v1.5_turbo.safetensors, vae/ace_1.5_vae.safetensors,
  text_encoders/qwen_0.6b_ace15.safetensors, text_encoders/qwen_1.7b_ace15.safetensors ..., and the
  all-in-one checkpoints/ace_step_1.5_turbo_aio.safetensors (DiT, VAE and text encoder in one file).

Listing functions are called from define_schema, so every filesystem access is guarded: a
missing or unreadable folder gives an empty list, never an exception.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

from ..acestep_core import checkpoints
from . import host

log = logging.getLogger(__name__)

FOLDER_KEY = "acestep"
CHECKPOINTS_KEY = "checkpoints"  # ComfyUI's CheckpointLoaderSimple folder, where the all-in-one file lives
# Combo kind -> ComfyUI folder key of its single files.
FILE_KEYS = {"dit": "diffusion_models", "vae": "vae", "text_encoder": "text_encoders"}
COMFY_FILES = {"vae": checkpoints.COMFY_VAE_FILE, "text_encoder": checkpoints.COMFY_TEXT_ENCODER_FILE}
LM_SIZES = checkpoints.LM_SIZES
AUTO = "auto"
NONE = "none"
SAFETENSORS = ".safetensors"
CONFIG_SIDECAR_SUFFIX = checkpoints.CONFIG_SIDECAR_SUFFIX


def register_folder() -> None:
    """Make models/acestep/ a known model folder (kept if the user already mapped it)."""
    try:
        fp = host.folder_paths
        default = os.path.join(fp.models_dir, FOLDER_KEY)
        if FOLDER_KEY not in fp.folder_names_and_paths:
            fp.folder_names_and_paths[FOLDER_KEY] = ([default], set(fp.supported_pt_extensions))
        else:
            fp.add_model_folder_path(FOLDER_KEY, default)
    except Exception as exc:  # registration must never break the pack import
        log.warning("ACE-Step: could not register the models/%s folder: %s", FOLDER_KEY, exc)


def _folder_paths(key: str) -> list[str]:
    try:
        return list(host.folder_paths.get_folder_paths(key))
    except Exception:
        return []


def _subdirs(root: str) -> list[Path]:
    try:
        return sorted((p for p in Path(root).iterdir() if p.is_dir()), key=lambda p: p.name)
    except OSError:
        return []


def _has(path: Path, name: str) -> bool:
    try:
        return (path / name).is_file()
    except OSError:
        return False


def _safetensor_files(key: str) -> list[str]:
    try:
        names = host.folder_paths.get_filename_list(key)
    except Exception:
        return []
    return sorted(n for n in names if n.lower().endswith(SAFETENSORS))


def _ace_first(names: list[str]) -> list[str]:
    """ACE-looking files first so the default choice is the likely one."""
    def is_ace(name: str) -> bool:
        low = name.lower()
        return "ace" in low
    return [n for n in names if is_ace(n)] + [n for n in names if not is_ace(n)]


# ---------------------------------------------------------------- official folder classification

def _kind_of_folder(path: Path) -> Optional[str]:
    """dit | vae | text_encoder | lm, from the folder's config.json; None if unrecognised."""
    return checkpoints.folder_kind(path)


def official_folders(kind: str) -> dict[str, Path]:
    """name -> path of official folders of one kind under every models/acestep/ root.

    The name is the folder name as shown in the combo; the first root wins on duplicates.
    """
    found: dict[str, Path] = {}
    for root in _folder_paths(FOLDER_KEY):
        for sub in _subdirs(root):
            if sub.name in found:
                continue
            if _kind_of_folder(sub) == kind:
                found[sub.name] = sub
    return found


# ---------------------------------------------------------------- combo choices

def all_in_one_files() -> list[str]:
    """ACE-Step 1.5 all-in-one checkpoints in models/checkpoints/. That folder holds other models'
    checkpoints too (ACE-Step 1.0's among them), so each ACE-looking name is checked by its header."""
    found = []
    for name in _safetensor_files(CHECKPOINTS_KEY):
        if "ace" in name.lower():
            path = _full_path(CHECKPOINTS_KEY, name)
            if path and checkpoints.all_in_one_parts(path):
                found.append(name)
    return found


def dit_choices() -> list[str]:
    files = _ace_first(_safetensor_files("diffusion_models"))
    return list(official_folders("dit")) + files + [n for n in all_in_one_files() if n not in files]


def preferred_dit(choices: list[str]) -> Optional[str]:
    """The default DiT among `choices`: turbo, the official default (non-XL first), else the first."""
    def rank(name: str) -> int:
        low = os.path.basename(name).lower()
        return 0 if "turbo" in low and "xl" not in low else 1 if "turbo" in low else 2
    return min(choices, key=rank) if choices else None


def vae_choices() -> list[str]:
    return [AUTO] + list(official_folders("vae")) + _ace_first(_safetensor_files("vae"))


def text_encoder_choices() -> list[str]:
    files = [n for n in _safetensor_files("text_encoders") if not _looks_like_lm_file(n)]
    return [AUTO] + list(official_folders("text_encoder")) + _ace_first(files)


def lm_choices() -> list[str]:
    return [AUTO, NONE, *LM_SIZES]


def _looks_like_lm_file(name: str) -> bool:
    return checkpoints.is_lm_file_name(name)


def available_lms() -> dict[str, str]:
    """LM size -> path (official folder preferred over a ComfyUI file), by the engine's one LM finder."""
    files = [_full_path("text_encoders", n) for n in _safetensor_files("text_encoders") if _looks_like_lm_file(n)]
    found = checkpoints.find_lms(_folder_paths(FOLDER_KEY), [f for f in files if f])
    return {size: str(path) for size, path in found.items()}


# ---------------------------------------------------------------- resolution (execution time)

def _full_path(key: str, name: str) -> Optional[str]:
    try:
        return host.folder_paths.get_full_path(key, name)
    except Exception:
        return None


def resolve(kind: str, choice: str) -> Optional[str]:
    """Path for a combo value of `kind` (dit | vae | text_encoder); None for auto/none/unknown."""
    if choice in (AUTO, NONE, "", None):
        return None
    folders = official_folders(kind)
    if choice in folders:
        return str(folders[choice])
    path = _full_path(FILE_KEYS[kind], choice)
    if path is None and kind == "dit":
        path = _full_path(CHECKPOINTS_KEY, choice)
    return path


def checkpoint_root_of(dit_path: str) -> Optional[str]:
    """The official root holding an official DiT folder (where vae/ and the encoder live)."""
    p = Path(dit_path)
    return str(p.parent) if p.is_dir() else None


def sibling_official(kind: str, root: Optional[str]) -> Optional[str]:
    """An official component folder of `kind` in the same root as the DiT, else any installed one."""
    if root:
        for sub in _subdirs(root):
            if _kind_of_folder(sub) == kind:
                return str(sub)
    folders = official_folders(kind)
    return str(next(iter(folders.values()))) if folders else None


def comfy_file(kind: str) -> Optional[str]:
    """ComfyUI's own file of `kind` (ace_1.5_vae / qwen_0.6b_ace15) in its model folder, in any subfolder."""
    wanted = COMFY_FILES[kind]
    for name in _safetensor_files(FILE_KEYS[kind]):
        if os.path.basename(name).lower() == wanted:
            return _full_path(FILE_KEYS[kind], name)
    return None


def auto_component(kind: str, dit_path: str) -> Optional[str]:
    """What `auto` loads as the VAE or text encoder of `dit_path`: the official folder beside an
    official DiT folder, else any official folder, else ComfyUI's own file; None when there is none.
    (An all-in-one DiT's own components come first; the loader checks that before calling this.)"""
    return sibling_official(kind, checkpoint_root_of(dit_path)) or comfy_file(kind)


def lm_install_hint(size: str) -> str:
    """Where the LM of `size` goes: the official folder, or ComfyUI's file where one exists."""
    folder = f"{checkpoints.LM_FOLDER_PREFIX}{size}/"
    comfy = checkpoints.COMFY_LM_FILES.get(size)
    if comfy:
        return f"put {folder} in models/{FOLDER_KEY}/ or {comfy} in models/text_encoders/"
    return (f"put the official folder {folder} in models/{FOLDER_KEY}/ (it exists only in that form; "
            f"{checkpoints.COMFY_TEXT_ENCODER_FILE} is the text encoder, not this LM)")


def sidecar_config(file_path: str) -> Optional[dict]:
    """An optional `<file stem>.acestep.json` beside a single-file checkpoint (docs/checkpoints.md);
    the DiT and VAE loaders read it themselves."""
    return checkpoints.sidecar_config(file_path)
