"""A real headless ComfyUI (COMFYUI_DIR) loads the pack and runs every shipped API workflow.

Set COMFYUI_DIR (a ComfyUI source tree) and optionally COMFYUI_PYTHON (its venv's python, which
needs this project's engine dependencies). Without them these tests skip.
"""

from __future__ import annotations

import io
import json
import time
import os
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest

from comfyui_harness import HAVE_COMFYUI, REPO_ROOT, SKIP_REASON, running_comfyui
from nodes_models import SHORTENED_SECONDS, shorten_for_tiny, write_source_audio

PORT = int(os.environ.get("ACE15S_TEST_PORT", "18231"))
BASE = f"http://127.0.0.1:{PORT}"
RUN_LIMIT_S = 600

pytestmark = [
    pytest.mark.comfyui, pytest.mark.slow,
    pytest.mark.skipif(not HAVE_COMFYUI, reason=SKIP_REASON),
]


def _http(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(BASE + path, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            raw = resp.read()
            return resp.status, raw
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_dir, comfy_tiny_dir):
    root = tmp_path_factory.mktemp("comfyui")
    (root / "in").mkdir(exist_ok=True)
    write_source_audio(root / "in" / "ace15s_example_song.flac", tiny_dir)
    with running_comfyui(root, tiny_dir, comfy_tiny_dir, PORT) as info:
        yield info


class Client:
    """A ComfyUI front-end stand-in: one websocket (aiohttp, driven synchronously) plus /prompt."""

    def __init__(self):
        import asyncio

        import aiohttp

        self.client_id = uuid.uuid4().hex
        self._loop = asyncio.new_event_loop()
        async def connect():
            session = aiohttp.ClientSession()
            ws = await session.ws_connect(f"ws://127.0.0.1:{PORT}/ws?clientId={self.client_id}", max_msg_size=0)
            return session, ws

        self._session, self.ws = self._loop.run_until_complete(connect())

    def _recv(self):
        import aiohttp

        msg = self._loop.run_until_complete(self.ws.receive(timeout=RUN_LIMIT_S))
        if msg.type == aiohttp.WSMsgType.TEXT:
            return msg.data
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
            raise ConnectionError(f"websocket closed: {msg!r}")
        return None  # binary preview frames

    def submit(self, prompt, extra=None):
        body = {"prompt": prompt, "client_id": self.client_id}
        if extra:
            body["extra_data"] = {"extra_pnginfo": extra}
        return _http("POST", "/prompt", body)

    def wait(self, prompt_id, on_message=None):
        events = []
        while True:
            raw = self._recv()
            if raw is None:
                continue
            msg = json.loads(raw)
            data = msg.get("data") or {}
            if data.get("prompt_id") not in (None, prompt_id):
                continue
            events.append(msg)
            if on_message:
                on_message(msg)
            if msg["type"] in ("execution_error", "execution_interrupted"):
                return events
            if msg["type"] == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
                return events

    def close(self):
        async def close():
            await self.ws.close()
            await self._session.close()

        self._loop.run_until_complete(close())
        self._loop.close()


def _decode(raw: bytes):
    import av

    with av.open(io.BytesIO(raw)) as c:
        stream = c.streams.audio[0]
        samples = sum(fr.samples for fr in c.decode(audio=0))
        return stream.channels, samples / stream.sample_rate, dict(c.metadata)


def test_pack_nodes_registered(server):
    status, raw = _http("GET", "/object_info")
    assert status == 200
    info = json.loads(raw)
    ours = {k: v for k, v in info.items() if k.startswith("ACE15S_")}
    assert len(ours) == 14, (server["log"].read_text()[-3000:])
    assert all(v["python_module"].startswith("custom_nodes.") for v in ours.values())
    dit = ours["ACE15S_LoadModel"]["input"]["required"]["dit"]
    files = ["acestep_v1.5_base.safetensors", "acestep_v1.5_turbo.safetensors",
             "ace_step_1.5_turbo_aio.safetensors"]  # the all-in-one file, from models/checkpoints/
    assert (dit[1].get("options") or dit[0]) == files
    assert dit[1]["default"] == "acestep_v1.5_turbo.safetensors"  # the official default model
    assert info["SaveAudio"]["python_module"] == "comfy_extras.nodes_audio"  # core untouched
    lora = ours["ACE15S_LoRA"]["input"]["required"]["lora"]  # ComfyUI's loras folder, PEFT folder as one choice
    assert (lora[1].get("options") or lora[0]) == ["ace15s_example_lora", "ace15s_example_lora_b.safetensors"]


WORKFLOWS = sorted(p.name[: -len(".api.json")] for p in (REPO_ROOT / "workflows" / "api").glob("*.api.json"))


@pytest.mark.parametrize("name", WORKFLOWS)
def test_workflow_runs_over_http(server, name):
    prompt = shorten_for_tiny(json.loads((REPO_ROOT / "workflows" / "api" / f"{name}.api.json").read_text()))
    workflow = json.loads((REPO_ROOT / "workflows" / f"{name}.json").read_text())
    client = Client()
    try:
        status, raw = client.submit(prompt, extra={"workflow": workflow})
        assert status == 200, raw.decode()
        prompt_id = json.loads(raw)["prompt_id"]
        events = client.wait(prompt_id)
    finally:
        client.close()
    types = [e["type"] for e in events]
    assert "execution_error" not in types, json.dumps([e for e in events if e["type"] == "execution_error"])[:4000]
    assert "execution_success" in types and "progress" in types
    _, raw = _http("GET", f"/history/{prompt_id}")
    entry = json.loads(raw)[prompt_id]
    assert entry["status"]["status_str"] == "success"
    files = [f for out in entry["outputs"].values() for f in out.get("audio", [])]
    assert files
    for f in files:
        q = urllib.parse.urlencode({"filename": f["filename"], "subfolder": f["subfolder"], "type": f["type"]})
        status, data = _http("GET", f"/view?{q}")
        assert status == 200
        channels, seconds, tags = _decode(data)
        assert channels == 2
        expected = SHORTENED_SECONDS[name]
        if expected is None:  # Simple Mode: the LM picks the length (up to 10 min)
            assert 1.0 < seconds <= 600.1
        else:
            assert abs(seconds - expected) < 0.15, (f["filename"], seconds, expected)
        if f["filename"].endswith(".mp3") and f["type"] == "output":
            assert data[:3] == b"ID3"
            assert json.loads(tags["workflow"])["version"] == 0.4 and "prompt" in tags


def test_cancel_mid_run_then_keeps_serving(server):
    """Cancel while the LM is writing: the tiny LM free-runs thousands of tokens in Format Input, so
    the interrupt sent at its first progress event always lands mid-loop (the turbo DiT's 8 steps
    on the tiny model are too quick to aim at)."""
    prompt = json.loads((REPO_ROOT / "workflows" / "api" / "format_input_text2music.api.json").read_text())
    lm_node = next(nid for nid, n in prompt.items() if n["class_type"] == "ACE15S_FormatInput")
    client = Client()
    sent, progress = [], []

    def interrupt_on_progress(msg):
        if msg["type"] == "progress" and msg["data"].get("node") == lm_node:
            progress.append(msg["data"])
            if not sent:
                sent.append(_http("POST", "/interrupt", {}))

    try:
        status, raw = client.submit(prompt)
        assert status == 200, raw
        prompt_id = json.loads(raw)["prompt_id"]
        events = client.wait(prompt_id, interrupt_on_progress)
    finally:
        client.close()
    assert sent and sent[0][0] == 200
    assert events[-1]["type"] == "execution_interrupted", [e["type"] for e in events][-5:]
    assert events[-1]["data"]["node_type"] == "ACE15S_FormatInput"
    assert progress[-1]["value"] < progress[-1]["max"]  # stopped mid-loop, not at the end
    # ComfyUI writes the history entry just after it sends the interrupt event: wait for it.
    deadline = time.time() + 30
    history = {}
    while prompt_id not in history and time.time() < deadline:
        _, raw = _http("GET", f"/history/{prompt_id}")
        history = json.loads(raw)
        if prompt_id not in history:
            time.sleep(0.5)
    assert history[prompt_id]["status"]["status_str"] == "error"
    # the server still serves: a small run succeeds
    small = shorten_for_tiny(json.loads((REPO_ROOT / "workflows" / "api" / "repaint.api.json").read_text()))
    client = Client()
    try:
        status, raw = client.submit(small)
        assert status == 200
        events = client.wait(json.loads(raw)["prompt_id"])
    finally:
        client.close()
    assert any(e["type"] == "execution_success" for e in events)


def test_bad_prompt_is_400_with_our_message(server):
    prompt = json.loads((REPO_ROOT / "workflows" / "api" / "repaint.api.json").read_text())
    prompt["3"]["inputs"]["end"] = prompt["3"]["inputs"]["start"]
    status, raw = _http("POST", "/prompt", {"prompt": prompt})
    assert status == 400
    body = json.loads(raw)
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    errors = body["node_errors"]["3"]["errors"]
    assert errors[0]["type"] == "custom_validation_failed" and "must be at least" in errors[0]["details"]
    prompt = json.loads((REPO_ROOT / "workflows" / "api" / "repaint.api.json").read_text())
    prompt["4"]["inputs"]["filename_prefix"] = "../../etc/x"
    status, raw = _http("POST", "/prompt", {"prompt": prompt})
    assert status == 400
    errors = json.loads(raw)["node_errors"]["4"]["errors"]
    assert errors[0]["type"] == "custom_validation_failed"
    assert "must be a relative name inside the output folder" in errors[0]["details"]


def test_validation_follows_comfyuis_rules_for_named_and_linked_inputs(server):
    """ComfyUI's own range checks stay on for the inputs a node's validate_inputs does not name, the named
    ones are checked by the node, and a widget fed by a link (PrimitiveFloat) validates and runs."""
    base = json.loads((REPO_ROOT / "workflows" / "api" / "repaint.api.json").read_text())
    for name, value, kind in (("steps", 0, "value_smaller_than_min"), ("start", -2.0, "custom_validation_failed")):
        prompt = json.loads(json.dumps(base))
        prompt["3"]["inputs"][name] = value
        status, raw = _http("POST", "/prompt", {"prompt": prompt})
        assert status == 400
        errors = json.loads(raw)["node_errors"]["3"]["errors"]
        assert [e["type"] for e in errors] == [kind] * len(errors), errors
    linked = shorten_for_tiny(json.loads(json.dumps(base)))
    linked["90"] = {"class_type": "PrimitiveFloat", "inputs": {"value": 1.5}}
    linked["3"]["inputs"]["start"] = ["90", 0]
    client = Client()
    try:
        status, raw = client.submit(linked)
        assert status == 200, raw
        events = client.wait(json.loads(raw)["prompt_id"])
    finally:
        client.close()
    assert any(e["type"] == "execution_success" for e in events), [e["type"] for e in events][-5:]
