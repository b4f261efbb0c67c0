"""Reading safetensors files with errors a user can act on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import torch
from safetensors import safe_open

from .errors import CheckpointError


def read_safetensors(path: Path, prefix: str = "", strip_prefix: bool = True) -> dict[str, torch.Tensor]:
    """All tensors of one file (optionally only those under `prefix`)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    tensors: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            for key in f.keys():
                if prefix and not key.startswith(prefix):
                    continue
                tensors[key[len(prefix):] if strip_prefix else key] = f.get_tensor(key)
    except CheckpointError:
        raise
    except Exception as exc:  # safetensors raises its own error types for truncated / corrupt files
        raise CheckpointError(
            f"cannot read {path}: it is not a valid safetensors file (truncated or corrupt download?). "
            f"Delete it and download it again. Detail: {exc}"
        ) from exc
    return tensors


def safetensors_keys(path: Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return list(f.keys())
    except Exception as exc:
        raise CheckpointError(
            f"cannot read {path}: it is not a valid safetensors file (truncated or corrupt download?). "
            f"Delete it and download it again. Detail: {exc}"
        ) from exc


def safetensors_metadata(path: Path) -> dict[str, str]:
    """The file's string metadata (empty when it has none)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return dict(f.metadata() or {})
    except Exception as exc:
        raise CheckpointError(
            f"cannot read {path}: it is not a valid safetensors file (truncated or corrupt download?). "
            f"Delete it and download it again. Detail: {exc}"
        ) from exc


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
