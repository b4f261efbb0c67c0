"""`python -m acestep_core serve` driven exactly like the acestep skill's script: curl + jq, from
`generate` to a file that decodes, in both of its modes: native (/release_task + polling + download,
tests/scripts/skill_flow.sh) and the default completion mode (/v1/chat/completions with the audio
inline, tests/scripts/skill_completion_flow.sh)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from acestep_core.audio_io import load_audio

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = REPO_ROOT / "tests" / "scripts" / "skill_flow.sh"
COMPLETION_SCRIPT = REPO_ROOT / "tests" / "scripts" / "skill_completion_flow.sh"
STARTUP_LIMIT_S = 300
FLOW_LIMIT_S = 900

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not all(shutil.which(t) for t in ("curl", "jq", "bash", "base64")),
                       reason="the skill-flow test needs bash, curl, jq and base64 (apt-get install curl jq)"),
]


def start_server(tiny_dir: Path, out: Path, env: dict) -> tuple[subprocess.Popen, str, Path]:
    log_path = out / "server.log"
    log = open(log_path, "w")
    # The memory decision's batch limit is for real weights (a CPU below 24 GB RAM gets batch 1); the
    # skill's default batch of 2 is what these flows check.
    env = dict(env, ACESTEP_MEMORY_LIMITS=env.get("ACESTEP_MEMORY_LIMITS", "off"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "acestep_core", "serve", "--host", "127.0.0.1", "--port", "0", "--no-lm",
         "--dit", str(tiny_dir / "acestep-v15-turbo-tiny"), "--vae", str(tiny_dir / "vae-tiny"),
         "--text-encoder", str(tiny_dir / "Qwen3-Embedding-tiny"), "--output-dir", str(out / "results")],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=out)
    deadline = time.monotonic() + STARTUP_LIMIT_S
    while time.monotonic() < deadline:
        text = log_path.read_text()
        match = re.search(r"ACE-Step API on (http://127\.0\.0\.1:\d+)", text)
        if match:
            return proc, match.group(1), log_path
        if proc.poll() is not None:
            pytest.fail(f"serve exited during startup:\n{text[-3000:]}")
        time.sleep(0.2)
    proc.terminate()
    pytest.fail("serve did not start in time")


def run_flow(api_url: str, out: Path, api_key: str = "", **env_extra) -> subprocess.CompletedProcess:
    env = dict(os.environ, CAPTION="Pop music", LYRICS="[Verse]\nla la la", DURATION="10", STEPS="2",
               SEED="11", BPM="110", AUDIO_FORMAT="mp3", POLL_SECONDS="0.5",
               # config.json generation.* as a user without LM CoT would set them (keeps CPU tests short)
               USE_COT_CAPTION="false", USE_COT_LANGUAGE="false", **env_extra)
    args = ["bash", str(SCRIPT), api_url, str(out)] + ([api_key] if api_key else [])
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=FLOW_LIMIT_S)


def run_completion_flow(api_url: str, out: Path, api_key: str = "") -> subprocess.CompletedProcess:
    # config.json as shipped (api_mode=completion) except thinking=false: this server has no LM.
    env = dict(os.environ, CAPTION="Pop music", LYRICS="[Verse]\nla la la", DURATION="10", SEED="11",
               BPM="110", AUDIO_FORMAT="mp3", THINKING="false", USE_FORMAT="false")
    args = ["bash", str(COMPLETION_SCRIPT), api_url, str(out)] + ([api_key] if api_key else [])
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=FLOW_LIMIT_S)


def downloaded_files(stdout: str) -> list[Path]:
    return [Path(line[5:]) for line in stdout.splitlines() if line.startswith("FILE ")]


@pytest.mark.parametrize("api_key", ["", "k3y"])
def test_skill_generate_to_downloaded_file(tiny_dir, tmp_path, api_key):
    env = dict(os.environ, ACESTEP_API_KEY=api_key, PYTHONUNBUFFERED="1")
    proc, url, log = start_server(tiny_dir, tmp_path, env)
    try:
        if api_key:  # the script without the key is turned away
            denied = run_flow(url, tmp_path / "denied")
            assert denied.returncode != 0 and "FILE " not in denied.stdout
        flow = run_flow(url, tmp_path / "acestep_output", api_key=api_key)
        assert flow.returncode == 0, f"{flow.stdout}\n{flow.stderr}\n{log.read_text()[-3000:]}"
        assert flow.stdout.rstrip().endswith("OK")
        assert "metas: bpm=110 duration=10" in flow.stdout
        files = downloaded_files(flow.stdout)
        assert len(files) == 2  # the skill sends no batch_size: the server default (2) applies
        job_json = next((tmp_path / "acestep_output").glob("*.json"))
        assert files[0].name == f"{job_json.stem}_1.mp3"
        for f in files:
            audio = load_audio(f)
            assert audio.shape[0] == 2 and abs(audio.shape[1] / 48000 - 10.0) < 0.1
            assert float(audio.abs().max()) > 0
        # results live under the server's output folder, one folder per task
        assert (tmp_path / "results" / job_json.stem).is_dir()

        # the skill's default mode: one synchronous request, the song inline as base64
        if api_key:
            denied = run_completion_flow(url, tmp_path / "denied_completion")
            assert denied.returncode != 0 and "HTTP 401" in denied.stderr
        done = run_completion_flow(url, tmp_path / "completion_output", api_key=api_key)
        assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{log.read_text()[-3000:]}"
        assert done.stdout.rstrip().endswith("OK") and "model: acestep/acestep-v15-turbo-tiny" in done.stdout
        assert "**BPM:** 110" in done.stdout and "## Lyrics\n[Verse]\nla la la" in done.stdout
        files = downloaded_files(done.stdout)
        assert len(files) == 1  # completion mode makes one song by default
        saved = json.loads(next((tmp_path / "completion_output").glob("*.json")).read_text())
        assert files[0].name == f"{saved['id']}_1.mp3" and saved["choices"][0]["message"]["audio"][0] == {
            "type": "audio_url", "audio_url": {}}  # the script strips the base64 before saving
        audio = load_audio(files[0])
        assert audio.shape[0] == 2 and abs(audio.shape[1] / 48000 - 10.0) < 0.1
        assert float(audio.abs().max()) > 0
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert proc.returncode == 0, log.read_text()[-2000:]  # SIGTERM stops it cleanly
