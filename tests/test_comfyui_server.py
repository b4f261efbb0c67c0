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
BINARY_TEXT = 3  # protocol.BinaryEventTypes.TEXT

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
        self.node_texts = []  # (node id, text): ComfyUI's progress text, shown under a node in the editor
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
        data = bytes(msg.data)
        if int.from_bytes(data[:4], "big") == BINARY_TEXT:  # [event][node id length][node id][text]
            size = int.from_bytes(data[4:8], "big")
            self.node_texts.append((data[8:8 + size].decode(), data[8 + size:].decode()))
        return None  # binary frames (previews, node text)

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
    prompt["4"]["inputs"]["filename_prefix"] = "../../etc/x"
    status, raw = _http("POST", "/prompt", {"prompt": prompt})
    assert status == 400
    body = json.loads(raw)
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    errors = body["node_errors"]["4"]["errors"]
    assert errors[0]["type"] == "custom_validation_failed"
    assert "must be a relative name inside the output folder" in errors[0]["details"]


def _node_errors(prompt, nid):
    status, raw = _http("POST", "/prompt", {"prompt": prompt})
    assert status == 400, raw
    return [(e["extra_info"].get("input_name"), e["type"], e["details"])
            for e in json.loads(raw)["node_errors"][nid]["errors"]]


def test_each_validation_message_lands_on_its_own_input(server):
    """ComfyUI files a validate_inputs answer under every input that function names: a wrong value is
    reported once, under the input that is wrong; a value of the wrong type gets ComfyUI's own
    invalid_input_type (the node's validation does not crash on it)."""
    t2m = json.loads((REPO_ROOT / "workflows" / "api" / "text2music_thinking.api.json").read_text())
    repaint = json.loads((REPO_ROOT / "workflows" / "api" / "repaint.api.json").read_text())
    for base, nid, name, value, kind in (
            (t2m, "3", "duration", 5000, "value_bigger_than_max"), (t2m, "3", "bpm", 10, "custom_validation_failed"),
            (t2m, "2", "bpm", 10, "custom_validation_failed"), (t2m, "3", "duration", "abc", "invalid_input_type"),
            (t2m, "3", "bpm", "abc", "invalid_input_type"), (repaint, "3", "start", "x", "invalid_input_type"),
            (repaint, "3", "start", -2.0, "value_smaller_than_min")):
        prompt = json.loads(json.dumps(base))
        prompt[nid]["inputs"][name] = value
        errors = _node_errors(prompt, nid)
        assert [(n, k) for n, k, _ in errors] == [(name, kind)], (name, value, errors)
        if name == "bpm" and kind == "custom_validation_failed":
            assert "bpm must be 0 (auto) or from 30 to 300, got 10" in errors[0][2]


def test_validation_follows_comfyuis_rules_for_named_and_linked_inputs(server):
    """ComfyUI's own range checks stay on for the inputs a node's validate_inputs does not name, and a
    widget fed by a link (PrimitiveFloat) validates and runs."""
    base = json.loads((REPO_ROOT / "workflows" / "api" / "repaint.api.json").read_text())
    for name, value, kind in (("steps", 0, "value_smaller_than_min"), ("end", 700.0, "value_bigger_than_max")):
        prompt = json.loads(json.dumps(base))
        prompt["3"]["inputs"][name] = value
        assert [(n, k) for n, k, _ in _node_errors(prompt, "3")] == [(name, kind)]
    linked = shorten_for_tiny(json.loads(json.dumps(base)))
    linked["90"] = {"class_type": "PrimitiveFloat", "inputs": {"value": 1.5}}
    linked["3"]["inputs"]["start"] = ["90", 0]
    events = _run(linked)
    assert any(e["type"] == "execution_success" for e in events), [e["type"] for e in events][-5:]


def _run(prompt, client=None):
    own = client is None
    client = client or Client()
    try:
        status, raw = client.submit(prompt)
        assert status == 200, raw
        return client.wait(json.loads(raw)["prompt_id"])
    finally:
        if own:
            client.close()


def _error(events):
    errors = [e["data"] for e in events if e["type"] == "execution_error"]
    assert errors, [e["type"] for e in events][-5:]
    return errors[0]


def test_a_window_out_of_order_fails_at_run_with_a_clean_error_type(server):
    prompt = shorten_for_tiny(json.loads((REPO_ROOT / "workflows" / "api" / "repaint.api.json").read_text()))
    prompt["3"]["inputs"]["end"] = prompt["3"]["inputs"]["start"]
    error = _error(_run(prompt))
    assert error["node_type"] == "ACE15S_Repaint"
    assert "Repaint: end (1s) must be at least 0.5s after start (1s)" in error["exception_message"]
    assert error["exception_type"] == "acestep_core.errors.InputError"


def _loader(**inputs):
    return {"class_type": "ACE15S_LoadModel",
            "inputs": {"dit": "acestep_v1.5_turbo.safetensors", "vae": "auto", "text_encoder": "auto", "lm": "auto",
                       "offload": "auto", "dtype": "auto", **inputs}}


def _text2music(**inputs):
    return {"class_type": "ACE15S_Text2Music", "inputs": {
        "model": ["1", 0], "caption": "lo-fi", "lyrics": "", "duration": 6.0, "bpm": 0, "keyscale": "auto",
        "timesignature": "auto", "language": "auto", "seed": 1, "steps": 8, "shift": 3.0, "guidance": 7.0,
        "batch_size": 1, "adg": False, **inputs}}


def _saver(prefix, source="2"):
    return {"class_type": "ACE15S_SaveAudio", "inputs": {"audio": [source, 0], "filename_prefix": prefix,
                                                         "format": "flac"}}


def _outputs(events):
    types = [e["type"] for e in events]
    assert "execution_success" in types, json.dumps([e for e in events if e["type"] == "execution_error"])[:3000]
    prompt_id = events[-1]["data"]["prompt_id"]
    _, raw = _http("GET", f"/history/{prompt_id}")
    return json.loads(raw)[prompt_id]["outputs"]


def test_fresh_loader_defaults_run_on_comfyuis_own_files(server):
    """Only ComfyUI's files are installed (no models/acestep/ folders): a Load node as it comes, VAE and
    text encoder on auto, takes ace_1.5_vae and qwen_0.6b_ace15. Saves with %batch_num% in the prefix
    never overwrite: two Save nodes of one graph (two songs), and the graph run twice; what the run
    changed shows on Text2Music. (Two Save nodes with the very same inputs are one node to ComfyUI's
    cache, hence two songs.)"""
    info = json.loads(_http("GET", "/object_info/ACE15S_LoadModel")[1])["ACE15S_LoadModel"]["input"]["required"]
    defaults = {name: spec[1]["default"] for name, spec in info.items()}
    assert defaults["vae"] == defaults["text_encoder"] == "auto"
    client = Client()
    names = []
    try:
        for seed in (1, 2):
            prompt = {"1": {"class_type": "ACE15S_LoadModel", "inputs": defaults},
                      "2": _text2music(seed=seed, duration=4.0), "5": _text2music(seed=seed + 10),
                      "3": _saver("bn/x_%batch_num%"), "4": _saver("bn/x_%batch_num%", source="5")}
            outputs = _outputs(_run(prompt, client))
            names += [f["filename"] for nid in ("3", "4") for f in outputs[nid]["audio"]]
            if seed == 1:  # the second run takes the loaded model from ComfyUI's cache
                loaded = outputs["1"]["text"][0]
                assert "VAE: ace_1.5_vae.safetensors" in loaded and "Text encoder: qwen_0.6b_ace15.safetensors" in loaded
            (report,) = outputs["2"]["text"]
            assert report.startswith(f"1 song of 5.12 s, seed {seed}")
            assert "4 s asked for; the DiT's shortest output is 5.12 s" in report
    finally:
        client.close()
    assert len(set(names)) == 4 and all(n.startswith("x_0_") for n in names), names
    assert sorted(p.name for p in (server["root"] / "out" / "bn").iterdir()) == sorted(names)
    assert (("2", report) in client.node_texts)  # shown under the node in the editor


def test_all_in_one_checkpoint_takes_its_own_vae_and_text_encoder(server):
    aio = "ace_step_1.5_turbo_aio.safetensors"
    outputs = _outputs(_run({"1": _loader(dit=aio, lm="none"), "2": _text2music(), "3": _saver("aio/song")}))
    loaded = outputs["1"]["text"][0]
    assert f"VAE: {aio} (its own)" in loaded and f"Text encoder: {aio} (its own)" in loaded
    assert [f["filename"] for f in outputs["3"]["audio"]] == ["song_00001.flac"]


def test_lm_errors_say_what_auto_did_and_where_an_lm_comes_from(server):
    """lm auto on a CPU leaves the LM off: an LM node says so and asks for a size, not for auto; an
    LM size that is not installed names the folder or file it comes from (0.6B: only the folder)."""
    think = json.loads((REPO_ROOT / "workflows" / "api" / "text2music_thinking.api.json").read_text())
    think = shorten_for_tiny(think)
    think["1"] = _loader(lm="auto")
    error = _error(_run(think))
    assert error["node_type"] == "ACE15S_LMThinking" and error["exception_type"] == "acestep_core.errors.InputError"
    assert "'lm' auto chose no LM on this machine (it is off by default on the CPU" in error["exception_message"]
    assert "Set 'lm' to an installed size explicitly (1.7B)" in error["exception_message"]
    think["1"] = _loader(lm="0.6B")
    error = _error(_run(think))
    assert error["node_type"] == "ACE15S_LoadModel" and error["exception_type"] == "acestep_core.errors.CheckpointError"
    assert "put the official folder acestep-5Hz-lm-0.6B/ in models/acestep/" in error["exception_message"]
    assert "qwen_0.6b_ace15.safetensors is the text encoder, not this LM" in error["exception_message"]
