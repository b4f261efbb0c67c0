"""Shared test fixtures: the tiny official-layout checkpoints and goldens beside the repo."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("ACESTEP_SHARED_DIR", REPO_ROOT.parent / "shared"))
TINY_DIR = SHARED / "fixtures" / "acestep-tiny"
GOLDENS_DIR = TINY_DIR / "goldens"
COMFY_TINY_DIR = SHARED / "fixtures" / "comfyui-format-tiny"

torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"test fixtures not found at {path}: the shared/ folder must sit beside the repo")
    return path


@pytest.fixture(scope="session")
def tiny_dir() -> Path:
    return _require(TINY_DIR)


@pytest.fixture(scope="session")
def comfy_tiny_dir() -> Path:
    return _require(COMFY_TINY_DIR)


@pytest.fixture(scope="session")
def manifest() -> dict:
    return json.loads((_require(GOLDENS_DIR) / "manifest.json").read_text())


def load_golden(case: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(_require(GOLDENS_DIR) / f"{case}.safetensors"))
