"""Checkpoint files: reading safetensors, configs and sidecars, shape checks, finding the 5 Hz LM.

Every loader (DiT, VAE, text encoder, LM, adapters) reads its weights through `read_safetensors`,
so a truncated or foreign file gives the same actionable CheckpointError everywhere. Key mapping
stays with each model's loader; `check_state_dict` compares the result with the model.
Where checkpoints live and how they are laid out: docs/checkpoints.md.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Iterator, Optional

import torch
from safetensors import safe_open

from .errors import CheckpointError

CONFIG_SIDECAR_SUFFIX = ".acestep.json"
LM_FOLDER_PREFIX = "acestep-5Hz-lm-"
LM_SIZES = ("0.6B", "1.7B", "4B")
# Which LM to take when no size is asked for and several are installed (the official default first).
LM_PREFERENCE = ("1.7B", "0.6B", "4B")
# The Qwen3 text encoder's vocabulary; the 5 Hz LM adds the 65 535 audio-code tokens on top.
TEXT_ENCODER_VOCAB_MAX = 151669

# ComfyUI's own file names (Comfy-Org/ace_step_1.5_ComfyUI_files, docs/checkpoints.md). The 0.6B LM has no
# ComfyUI file: qwen_0.6b_ace15 is the caption encoder.
COMFY_VAE_FILE = "ace_1.5_vae.safetensors"
COMFY_TEXT_ENCODER_FILE = "qwen_0.6b_ace15.safetensors"
COMFY_LM_FILES = {"1.7B": "qwen_1.7b_ace15.safetensors", "4B": "qwen_4b_ace15.safetensors"}
# Key prefixes of the all-in-one checkpoint (ComfyUI's CheckpointSave) and the key only an ACE-Step 1.5 DiT has.
AIO_DIT_PREFIX = "model.diffusion_model."
AIO_PARTS = {"vae": "vae.", "text_encoder": "text_encoders.qwen3_06b."}
ACE15_DIT_KEY = "encoder.lyric_encoder.layers.0.input_layernorm.weight"


def _unreadable(path: Path, what: str, exc: Exception) -> CheckpointError:
    label = f"{what} weights " if what else ""
    return CheckpointError(
        f"cannot read {label}{path}: it is not a valid safetensors file (truncated or corrupt download?). "
        f"Delete it and download it again. Detail: {exc}"
    )


def iter_safetensors(path: Path, prefix: str = "", strip_prefix: bool = True, dtype: torch.dtype | None = None,
                     what: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """(key, tensor) one at a time (optionally only keys under `prefix`, converted to `dtype` as read),
    so a caller that converts or places each tensor never holds a second copy of the whole file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        handle = safe_open(str(path), framework="pt", device="cpu")
    except Exception as exc:  # safetensors raises its own error types for truncated / corrupt files
        raise _unreadable(path, what, exc) from exc
    with handle as f:
        for key in f.keys():
            if prefix and not key.startswith(prefix):
                continue
            try:
                tensor = f.get_tensor(key)
            except Exception as exc:
                raise _unreadable(path, what, exc) from exc
            if dtype is not None and tensor.is_floating_point() and tensor.dtype != dtype:
                tensor = tensor.to(dtype)
            yield (key[len(prefix):] if strip_prefix else key), tensor


def read_safetensors(path: Path, prefix: str = "", strip_prefix: bool = True, dtype: torch.dtype | None = None,
                     what: str = "") -> dict[str, torch.Tensor]:
    """All tensors of one file (optionally only those under `prefix`, converted to `dtype` one by one)."""
    return dict(iter_safetensors(path, prefix, strip_prefix, dtype, what))


def safetensors_keys(path: Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return list(f.keys())
    except Exception as exc:
        raise _unreadable(path, "", exc) from exc


def read_config_json(path: Path, what: str) -> dict:
    """A checkpoint's config.json as a dict, or a CheckpointError that names the file and the fix."""
    path = Path(path)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"missing {path}: the {what} folder holds config.json") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot parse {path} ({exc}): the {what} config is broken; "
                              "download it again") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: the {what} config must be a JSON object, found {type(config).__name__}")
    return config


_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
                "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
_MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit


def check_safetensors_header(path: Path) -> int:
    """Read a safetensors header only and check it against the file: a valid JSON header whose tensors
    exactly cover the data that follows. Returns the tensor count; raises CheckpointError for a
    truncated, padded or random-bytes file without reading the weights."""
    path = Path(path)

    def corrupt(why: str) -> CheckpointError:
        return CheckpointError(f"{path} is corrupt: {why}. Delete it and download it again.")

    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                raise corrupt(f"only {size} bytes, shorter than a safetensors header")
            header_len = int.from_bytes(head, "little")
            if header_len > _MAX_HEADER_BYTES or 8 + header_len > size:
                raise corrupt("the header length does not fit the file (not a safetensors file, or truncated)")
            raw = handle.read(header_len)
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise corrupt("its header is not JSON") from None
    if not isinstance(header, dict):
        raise corrupt("its header is not a JSON object")
    data_len = size - 8 - header_len
    end = 0
    count = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            start, stop = (int(v) for v in info["data_offsets"])
            numel = 1
            for dim in info["shape"]:
                numel *= int(dim)
            width = _DTYPE_BYTES[info["dtype"]]
        except (KeyError, TypeError, ValueError):
            raise corrupt(f"tensor {name!r} has a malformed header entry") from None
        if not 0 <= start <= stop or stop - start != numel * width:
            raise corrupt(f"tensor {name!r} has inconsistent offsets")
        end = max(end, stop)
        count += 1
    if end > data_len:
        raise corrupt(f"truncated: the header needs {end} bytes of data, the file holds {data_len}")
    if end < data_len:
        raise corrupt(f"{data_len - end} bytes after the last tensor (not a clean safetensors file)")
    return count


def safetensors_metadata(path: Path) -> dict[str, str]:
    """The file's string metadata (empty when it has none)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return dict(f.metadata() or {})
    except Exception as exc:
        raise _unreadable(path, "", exc) from exc


def read_sharded_or_single(folder: Path, single_name: str = "model.safetensors") -> tuple[dict[str, torch.Tensor], str]:
    """A model folder's weights: `model.safetensors` or a `model.safetensors.index.json` shard set."""
    single = folder / single_name
    index = folder / f"{single_name}.index.json"
    if single.is_file():
        return read_safetensors(single), str(single)
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except Exception as exc:
            raise CheckpointError(f"cannot read shard index {index}: {exc}") from exc
        tensors: dict[str, torch.Tensor] = {}
        for shard in sorted(set(weight_map.values())):
            tensors.update(read_safetensors(folder / shard))
        missing = sorted(set(weight_map) - set(tensors))
        if missing:
            raise CheckpointError(f"shards of {index} lack keys listed in the index: {missing[:5]}")
        return tensors, str(index)
    raise CheckpointError(
        f"no weights in {folder}: expected {single_name} or {single_name}.index.json. "
        "Check that the download finished."
    )


def check_state_dict(
    file_label: str,
    expected: dict[str, torch.Size],
    actual: dict[str, torch.Tensor],
    ignore_unexpected: Iterable[str] = (),
) -> None:
    """Raise one CheckpointError listing the first missing, unexpected and mis-shaped keys."""
    ignore = set(ignore_unexpected)
    missing = sorted(k for k in expected if k not in actual)
    unexpected = sorted(k for k in actual if k not in expected and k not in ignore)
    wrong = sorted(
        f"{k}: file {tuple(actual[k].shape)} vs model {tuple(expected[k])}"
        for k in expected
        if k in actual and tuple(actual[k].shape) != tuple(expected[k])
    )
    if not (missing or unexpected or wrong):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s), e.g. {missing[:5]}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[:5]}")
    if wrong:
        parts.append(f"{len(wrong)} shape mismatch(es), e.g. {wrong[:5]}")
    raise CheckpointError(
        f"{file_label} does not match the ACE-Step 1.5 model it should hold: " + "; ".join(parts)
        + ". Is it the right file (and its config.json the one that came with it)?"
    )


# --------------------------------------------------------------------------------------------------
# Sidecars and folder kinds
# --------------------------------------------------------------------------------------------------


def sidecar_path(file: str | os.PathLike) -> Optional[Path]:
    """`<stem>.acestep.json` beside a single-file checkpoint (None for a folder)."""
    p = Path(file)
    if p.is_dir() or not p.suffix:
        return None
    return p.with_name(p.name[: -len(p.suffix)] + CONFIG_SIDECAR_SUFFIX)


def sidecar_config(file: str | os.PathLike) -> Optional[dict]:
    """The optional config sidecar of a single-file checkpoint, or None when there is none.

    ComfyUI repacks carry no config: sizes are read from tensor shapes and the rest is the published
    config. A sidecar overrides that (models built with other settings). Read by the DiT and VAE
    loaders themselves, so every front end honours it and reads it once."""
    sidecar = sidecar_path(file)
    if sidecar is None or not sidecar.is_file():
        return None
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"config sidecar {sidecar} is not valid JSON ({exc}); fix or remove it") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"config sidecar {sidecar} is not a JSON object; fix or remove it")
    return data


def _quiet_config(folder: Path) -> dict:
    try:
        data = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, UnicodeDecodeError, ValueError):
        return {}


def folder_kind(folder: str | os.PathLike) -> Optional[str]:
    """dit | vae | text_encoder | lm, from an official folder's config.json; None if unrecognised.
    Never raises (model lists are built from it)."""
    cfg = _quiet_config(Path(folder))
    if not cfg:
        return None
    if cfg.get("model_type") == "acestep" or "fsq_input_levels" in cfg:
        return "dit"
    if cfg.get("_class_name") == "AutoencoderOobleck" or "downsampling_ratios" in cfg:
        return "vae"
    if cfg.get("model_type") == "qwen3":
        try:
            vocab = int(cfg.get("vocab_size", 0))
        except (TypeError, ValueError):
            vocab = 0
        return "lm" if vocab > TEXT_ENCODER_VOCAB_MAX else "text_encoder"
    return None


# --------------------------------------------------------------------------------------------------
# The 5 Hz LM: one finder for every front end
# --------------------------------------------------------------------------------------------------


def lm_size_of(name: str | os.PathLike | None) -> Optional[str]:
    """"0.6B" / "1.7B" / "4B" from an LM folder name, file name or path; None if unrecognised."""
    from .memory.policy import lm_size_from_name

    return lm_size_from_name(None if name is None else str(name))


def is_lm_file_name(name: str) -> bool:
    """ComfyUI's LM repacks (qwen_1.7b_ace15 / qwen_4b_ace15); qwen_0.6b_ace15 is the text encoder."""
    low = os.path.basename(name).lower()
    return any(Path(f).stem in low for f in COMFY_LM_FILES.values())


def all_in_one_parts(path: str | os.PathLike) -> frozenset[str]:
    """The components ("vae", "text_encoder") an ACE-Step 1.5 all-in-one checkpoint carries besides its
    DiT; empty for a DiT-only file, another model's checkpoint or a file that cannot be read. Reads only
    the header, and never raises (model lists are built from it)."""
    try:
        if not Path(path).is_file():
            return frozenset()
        keys = safetensors_keys(Path(path))
    except (CheckpointError, OSError):
        return frozenset()
    if AIO_DIT_PREFIX + ACE15_DIT_KEY not in keys:
        return frozenset()
    return frozenset(part for part, prefix in AIO_PARTS.items() if any(k.startswith(prefix) for k in keys))


def _subdirs(root: Path) -> list[Path]:
    try:
        return sorted((p for p in Path(root).iterdir() if p.is_dir()), key=lambda p: p.name)
    except OSError:
        return []


def find_lms(roots: Iterable[str | os.PathLike] = (), files: Iterable[str | os.PathLike] = ()) -> dict[str, Path]:
    """LM size -> path of every sized 5 Hz LM installed: official folders under `roots` first (in
    order), then ComfyUI single files among `files`. Never raises."""
    found: dict[str, Path] = {}
    for root in roots:
        if root is None:
            continue
        for sub in _subdirs(Path(root)):
            size = lm_size_of(sub.name)
            if size and size not in found and folder_kind(sub) == "lm":
                found[size] = sub
    for file in files:
        size = lm_size_of(file) if is_lm_file_name(str(file)) else None
        if size and size not in found and Path(file).is_file():
            found[size] = Path(file)
    return found


def preferred_lm(found: dict[str, Path], preferred: Optional[str] = None) -> Optional[Path]:
    """The LM to use among `found` when the memory policy has not chosen one (official order)."""
    for size in ([preferred] if preferred else []) + list(LM_PREFERENCE):
        if size in found:
            return found[size]
    return next(iter(found.values()), None)


def find_lm(checkpoint_dir, name) -> Path:
    """Resolve an LM: "0.6B" / "1.7B" / "4B", a folder name under `checkpoint_dir`, or a path."""
    candidates = []
    if name:
        raw = Path(str(name)).expanduser()
        candidates.append(raw)
        if checkpoint_dir:
            base = Path(checkpoint_dir).expanduser()
            candidates += [base / str(name), base / f"{LM_FOLDER_PREFIX}{name}"]
    elif checkpoint_dir:
        base = Path(checkpoint_dir).expanduser()
        candidates += [base / f"{LM_FOLDER_PREFIX}{size}" for size in LM_PREFERENCE]
    for path in candidates:
        if path.exists():
            return path.resolve()
    raise CheckpointError(
        f"5 Hz LM {name or '(default)'} not found (looked at {', '.join(str(c) for c in candidates) or 'nothing'}); "
        "give --lm-model 0.6B|1.7B|4B with --checkpoint-dir holding acestep-5Hz-lm-<size>/, "
        "or a path to an LM folder or a ComfyUI qwen_*_ace15.safetensors file"
    )
