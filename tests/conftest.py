"""Test fixtures: the tiny official-layout checkpoints and goldens in tests/fixtures/."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES_DIR = REPO_ROOT / "tests" / "fixtures"
TINY_DIR = FIXTURES_DIR / "acestep-tiny"
GOLDENS_DIR = TINY_DIR / "goldens"
COMFY_TINY_DIR = FIXTURES_DIR / "comfyui-format-tiny"

torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"test fixture {path} is missing: tests/fixtures/ is part of the repository "
                    "(restore it with git checkout, or refresh it with scripts/sync_fixtures.sh)")
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


@pytest.fixture(scope="module")
def pipe():
    """The tiny turbo pipeline, one per test module (a module may define its own `pipe`)."""
    from engine_helpers import tiny_pipeline

    return tiny_pipeline()


@pytest.fixture(scope="module")
def t2m(manifest):
    """The t2m_turbo golden case and its tensors."""
    return manifest["cases"]["t2m_turbo"], load_golden("t2m_turbo")
