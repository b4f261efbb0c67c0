"""Starts a real headless ComfyUI (COMFYUI_DIR) with this pack and the tiny ComfyUI-format models."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

from nodes_models import build_models_dir

COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
COMFYUI_PYTHON = os.environ.get("COMFYUI_PYTHON") or (str(Path(COMFYUI_DIR) / ".venv" / "bin" / "python")
                                                      if COMFYUI_DIR else None)
REPO_ROOT = Path(__file__).resolve().parent.parent
STARTUP_LIMIT_S = 300
SKIP_REASON = "set COMFYUI_DIR to a ComfyUI source tree (and COMFYUI_PYTHON) to run real-ComfyUI tests"
HAVE_COMFYUI = bool(COMFYUI_DIR) and (Path(COMFYUI_DIR or ".") / "main.py").is_file()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_comfyui(root: Path, tiny_dir: Path, comfy_tiny_dir: Path, port: int) -> Iterator[dict]:
    """ComfyUI on 127.0.0.1:`port` with its own output/input/temp/user folders under `root`."""
    models = build_models_dir(root, tiny_dir, comfy_tiny_dir, official=False)  # ComfyUI files only
    for d in ("out", "in", "temp", "user", "custom"):
        (root / d).mkdir(exist_ok=True)
    (root / "custom" / "acestep15_studio").symlink_to(REPO_ROOT)
    (root / "paths.yaml").write_text(
        f"ace15s:\n  base_path: {models}\n  diffusion_models: diffusion_models\n  vae: vae\n"
        f"  text_encoders: text_encoders\n  checkpoints: checkpoints\n  acestep: acestep\n  loras: loras\n"
        f"  custom_nodes: {root / 'custom'}\n")
    log_path = root / "server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [COMFYUI_PYTHON, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
             "--disable-auto-launch", "--disable-api-nodes", "--extra-model-paths-config", str(root / "paths.yaml"),
             "--output-directory", str(root / "out"), "--input-directory", str(root / "in"),
             "--temp-directory", str(root / "temp"), "--database-url", "sqlite:///:memory:",
             "--user-directory", str(root / "user")],
            cwd=COMFYUI_DIR, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + STARTUP_LIMIT_S
        while time.time() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"ComfyUI exited during startup:\n{log_path.read_text()[-4000:]}")
            if "To see the GUI go to" in log_path.read_text():
                break
            time.sleep(1)
        else:
            pytest.fail("ComfyUI did not start in time")
        yield {"root": root, "log": log_path, "port": port}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
