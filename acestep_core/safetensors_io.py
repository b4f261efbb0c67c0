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
