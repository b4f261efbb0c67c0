"""Which ACE-Step 1.5 checkpoints are on disk (official folders and ComfyUI single files).

Used by `python -m acestep_core doctor` and to tell the memory policy which LM sizes exist.
Names, sizes and the presence of required files are checked, and every safetensors header and JSON
config is read and checked against its file, so a truncated, random-bytes or broken-JSON download is
reported as corrupt; no weights are loaded.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .policy import LM_FOLDER_PREFIX, lm_size_from_name

CHECKPOINTS_ENV = "ACESTEP_CHECKPOINTS_DIR"

# Files a folder of each kind needs (any one of a tuple is enough), docs/checkpoints.md#official-folder-layout.
_REQUIRED = {
    "dit": ("config.json", ("model.safetensors", "model.safetensors.index.json"), "silence_latent.pt"),
    "vae": ("config.json", "diffusion_pytorch_model.safetensors"),
    "text_encoder": ("config.json", "model.safetensors", "tokenizer.json"),
    "lm": ("config.json", ("model.safetensors", "model.safetensors.index.json"), "tokenizer.json"),
}
_KIND_LABEL = {"dit": "DiT", "vae": "VAE", "text_encoder": "text encoder", "lm": "5 Hz LM",
               "all_in_one": "all-in-one checkpoint"}

# ComfyUI model folders (and their legacy names) → what an ACE-Step file there is.
_COMFY_FOLDERS = {"diffusion_models": "dit", "unet": "dit", "text_encoders": "text_encoder",
                  "clip": "text_encoder", "vae": "vae", "checkpoints": "all_in_one"}
_COMFY_EXTENSIONS = (".safetensors", ".sft")


@dataclass
class FoundCheckpoint:
    kind: str  # dit | vae | text_encoder | lm | all_in_one
    name: str
    path: str
    size_bytes: int
    complete: bool = True
    missing: list[str] = field(default_factory=list)
    lm_size: str | None = None  # for LMs: 0.6B / 1.7B / 4B when the name says so
    corrupt: list[str] = field(default_factory=list)  # one line per damaged file

    @property
    def usable(self) -> bool:
        return self.complete and not self.corrupt

    @property
    def label(self) -> str:
        return _KIND_LABEL.get(self.kind, self.kind)

    def to_dict(self) -> dict:
        return asdict(self)


def default_checkpoint_dir(env: "os._Environ[str] | dict[str, str] | None" = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get(CHECKPOINTS_ENV) or "checkpoints")


def folder_kind(name: str) -> str | None:
    """Kind of an official checkpoint folder from its name (the `-tiny` test copies included)."""
    lower = name.lower()
    if lower.startswith(LM_FOLDER_PREFIX.lower()):
        return "lm"
    if lower.startswith("acestep-v15-"):
        return "dit"
    if lower == "vae" or lower.startswith("vae-"):
        return "vae"
    if lower.startswith("qwen3-embedding"):
        return "text_encoder"
    return None


def _folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file())


def scan_checkpoint_dir(root: str | os.PathLike) -> list[FoundCheckpoint]:
    """Official-layout folders directly under `root` (acestep-v15-*, vae, Qwen3-Embedding-0.6B,
    acestep-5Hz-lm-*). Empty when `root` does not exist."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for entry in sorted(root.iterdir()):
        kind = folder_kind(entry.name) if entry.is_dir() else None
        if kind is None:
            continue
        missing = []
        for need in _REQUIRED[kind]:
            options = need if isinstance(need, tuple) else (need,)
            if not any((entry / option).is_file() for option in options):
                missing.append(" or ".join(options))
        found.append(FoundCheckpoint(
            kind=kind, name=entry.name, path=str(entry), size_bytes=_folder_size(entry),
            complete=not missing, missing=missing,
            lm_size=lm_size_from_name(entry.name) if kind == "lm" else None,
            corrupt=folder_problems(entry, kind),
        ))
    return found


def file_problems(path: Path) -> list[str]:
    """What is wrong with one checkpoint file (a safetensors header or a JSON file); empty when sound."""
    from ..errors import CheckpointError
    from ..checkpoints import check_safetensors_header, read_config_json

    try:
        if path.suffix.lower() in _COMFY_EXTENSIONS:
            check_safetensors_header(path)
        elif path.suffix.lower() == ".json":
            if path.name == "config.json":
                read_config_json(path, "checkpoint")
            else:
                json.loads(path.read_text(encoding="utf-8"))
    except CheckpointError as exc:
        return [str(exc)]
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return [f"{path} is corrupt: {exc}. Delete it and download it again."]
    return []


def folder_problems(folder: Path, kind: str) -> list[str]:
    """Every safetensors header and JSON file of an official folder, and the DiT config's own consistency."""
    from ..errors import CheckpointError

    problems = []
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in (*_COMFY_EXTENSIONS, ".json"):
            problems += file_problems(path)
    config = folder / "config.json"
    if kind == "dit" and config.is_file() and not problems:
        from ..dit import check_dit_config

        try:
            check_dit_config(json.loads(config.read_text(encoding="utf-8")), str(config))
        except CheckpointError as exc:
            problems.append(str(exc))
    return problems


def scan_comfy_models(models_dir: str | os.PathLike) -> list[FoundCheckpoint]:
    """ACE-Step 1.5 single files in a ComfyUI `models/` folder (diffusion_models, text_encoders, vae,
    checkpoints and their legacy names), e.g. `acestep_v1.5_turbo.safetensors`,
    `qwen_0.6b_ace15.safetensors` (text encoder), `qwen_1.7b_ace15.safetensors` (LM)."""
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        return []
    found = []
    for folder, kind in _COMFY_FOLDERS.items():
        base = models_dir / folder
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*")):
            name = path.name.lower()
            if not (path.is_file() and name.endswith(_COMFY_EXTENSIONS) and "ace" in name):
                continue
            file_kind, lm_size = kind, None
            if kind == "text_encoder":
                size = lm_size_from_name(path.name)
                # qwen_0.6b_ace15 is Qwen3-Embedding (the caption encoder); the 1.7B / 4B files are LMs.
                if size in ("1.7B", "4B"):
                    file_kind, lm_size = "lm", size
            found.append(FoundCheckpoint(kind=file_kind, name=str(path.relative_to(models_dir)),
                                         path=str(path), size_bytes=path.stat().st_size, lm_size=lm_size,
                                         corrupt=file_problems(path)))
    return found


def available_lm_sizes(found: list[FoundCheckpoint]) -> list[str]:
    """LM sizes with a complete checkpoint among `found`."""
    return sorted({f.lm_size for f in found if f.kind == "lm" and f.complete and f.lm_size},
                  key=("0.6B", "1.7B", "4B").index)
