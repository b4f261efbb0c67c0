"""The REST API inside a real ComfyUI: the same skill flow against api_url = <ComfyUI>/acestep.

Set COMFYUI_DIR (a ComfyUI source tree) and optionally COMFYUI_PYTHON (its venv's python, which needs
this project's engine dependencies). Without them these tests skip.
"""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.parse
import urllib.request

import pytest

from acestep_core.audio_io import load_audio
from comfyui_harness import HAVE_COMFYUI, SKIP_REASON, free_port, running_comfyui
from test_server_skill_flow import downloaded_files, run_completion_flow, run_flow


pytestmark = [
    pytest.mark.comfyui, pytest.mark.slow,
    pytest.mark.skipif(not HAVE_COMFYUI, reason=SKIP_REASON),
    pytest.mark.skipif(not (shutil.which("curl") and shutil.which("jq")), reason="needs curl and jq"),
]


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture(scope="module")
def comfy(tmp_path_factory, tiny_dir, comfy_tiny_dir):
    root = tmp_path_factory.mktemp("comfyui_api")
    with running_comfyui(root, tiny_dir, comfy_tiny_dir, free_port()) as info:
        yield dict(info, url=f"http://127.0.0.1:{info['port']}/acestep")


def test_routes_are_mounted_under_acestep(comfy):
    status, body = get(comfy["url"] + "/health")
    assert status == 200, comfy["log"].read_text()[-3000:]
    assert json.loads(body)["data"]["service"] == "ACE-Step API"
    status, body = get(comfy["url"] + "/v1/models")
    models = json.loads(body)
    assert status == 200 and models["default_model"] == "acestep_v1.5_turbo"
    assert models["data"][0]["id"] == "acestep/acestep_v1.5_turbo"


def test_skill_flow_against_comfyui(comfy, tmp_path):
    flow = run_flow(comfy["url"], tmp_path / "acestep_output", BATCH="1")
    assert flow.returncode == 0, f"{flow.stdout}\n{flow.stderr}\n{comfy['log'].read_text()[-4000:]}"
    files = downloaded_files(flow.stdout)
    assert len(files) == 1
    audio = load_audio(files[0])
    assert audio.shape[0] == 2 and abs(audio.shape[1] / 48000 - 10.0) < 0.1
    # results are written inside ComfyUI's output folder
    job = next((tmp_path / "acestep_output").glob("*.json")).stem
    assert (comfy["root"] / "out" / "acestep_api" / job / f"{job}_1.mp3").is_file()


def test_skill_completion_flow_against_comfyui(comfy, tmp_path):
    """The skill's default mode (POST /v1/chat/completions, audio inline) on ComfyUI's own server."""
    done = run_completion_flow(comfy["url"], tmp_path / "completion_output")
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{comfy['log'].read_text()[-4000:]}"
    assert "model: acestep/acestep_v1.5_turbo" in done.stdout
    files = downloaded_files(done.stdout)
    assert len(files) == 1
    audio = load_audio(files[0])
    assert audio.shape[0] == 2 and abs(audio.shape[1] / 48000 - 10.0) < 0.1


def test_audio_route_refuses_paths_outside_its_folder(comfy):
    for raw in ("/etc/passwd", str(comfy["root"] / "paths.yaml"), "../../server.log"):
        status, _ = get(comfy["url"] + "/v1/audio?path=" + urllib.parse.quote(raw, safe=""))
        assert status == 403, raw
