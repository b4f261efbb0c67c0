"""/v1/lora/*: the official adapter endpoints on a live server with the tiny engine."""

from __future__ import annotations

import shutil

import pytest
import torch

from adapter_helpers import library_lokr, write_lokr
from engine_helpers import tiny_pipeline
from server_harness import LiveServer, http, release, tiny_provider, wait_done

from acestep_core.audio_io import load_audio
from acestep_core.server import Runtime, ServerConfig

FAST = {"inference_steps": 2, "audio_duration": 10, "batch_size": 1, "thinking": False, "seed": 5,
        "use_random_seed": False, "use_cot_caption": False, "use_cot_language": False, "audio_format": "wav",
        "prompt": "warm synth pads"}
STATUS_KEYS = {"lora_loaded", "use_lora", "lora_scale", "adapter_type", "scales", "active_adapter", "adapters",
               "synthetic_default_mode"}


@pytest.fixture(scope="module")
def lora_dir(tiny_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("loras") / "loras"
    shutil.copytree(tiny_dir / "loras", folder)
    (folder / "styles").mkdir()
    write_lokr(library_lokr(tiny_pipeline().dit.transformer), folder / "styles" / "lokr_weights.safetensors")
    return folder


@pytest.fixture(scope="module")
def server(tiny_dir, lora_dir, tmp_path_factory):
    config = ServerConfig.from_env(tmp_path_factory.mktemp("api") / "results", env={"ACESTEP_LORA_DIR": str(lora_dir)})
    with LiveServer(Runtime(tiny_provider(tiny_dir), config)) as live:
        yield live


def post(server, path, body):
    return http("POST", server.url + path, json=body)


def status(server):
    reply = http("GET", server.url + "/v1/lora/status")
    assert reply.status == 200
    assert set(reply.data) == STATUS_KEYS
    return reply.data


def song(server, **extra):
    """Queue a job with the server's current adapters; returns its task id."""
    reply = release(server.url, dict(FAST, **extra))
    assert reply.status == 200, reply.body
    task_id = reply.data["task_id"]
    return task_id


def finished(server, task_id):
    item = wait_done(server.url, task_id)
    assert item["status"] == 1, item
    job = server.runtime.store.get(task_id)
    return job.result["params"]["adapters"], load_audio(job.result["files"][0])


@pytest.fixture(autouse=True)
def clean_state(server):
    post(server, "/v1/lora/unload", {})
    yield


def test_status_before_anything_is_loaded(server):
    assert status(server) == {"lora_loaded": False, "use_lora": False, "lora_scale": 1.0, "adapter_type": None,
                              "scales": {}, "active_adapter": None, "adapters": [], "synthetic_default_mode": False}
    reply = post(server, "/v1/lora/unload", {})
    assert reply.status == 200 and reply.data == {"message": "⚠️ No LoRA adapter loaded."}


def test_paths_outside_the_lora_folder_are_403(server, tiny_dir, lora_dir):
    for path in (str(tiny_dir / "loras" / "lora_a"), "../loras/../../etc", "/etc/passwd"):
        reply = post(server, "/v1/lora/load", {"lora_path": path})
        assert reply.status == 403, (path, reply.body)
        assert "outside the LoRA folder" in reply.error
    assert not status(server)["lora_loaded"]


def test_load_scale_toggle_and_the_jobs_they_reach(server):
    base_id = song(server)
    reply = post(server, "/v1/lora/load", {"lora_path": "lora_a"})
    assert reply.status == 200, reply.body
    assert reply.data == {"message": "✅ LoRA 'lora_a' loaded from lora_a", "lora_path": "lora_a"}
    reply = post(server, "/v1/lora/scale", {"scale": 1.7})
    assert reply.data == {"message": "✅ LoRA scale (lora_a): 1.00", "scale": 1.0}  # clamped like the official API
    reply = post(server, "/v1/lora/scale", {"scale": 0.4})
    assert reply.data["scale"] == 0.4
    adapted_id = song(server)
    # Changes after a job is queued never reach it.
    post(server, "/v1/lora/scale", {"scale": 0.9})
    assert status(server)["scales"] == {"lora_a": 0.9}
    reply = post(server, "/v1/lora/toggle", {"use_lora": False})
    assert reply.data == {"message": "✅ LoRA disabled", "use_lora": False}
    off_id = song(server)
    post(server, "/v1/lora/toggle", {"use_lora": True})
    stacked = post(server, "/v1/lora/load", {"lora_path": "lora_b.comfyui.safetensors", "adapter_name": "b"})
    assert stacked.data["adapter_name"] == "b"
    post(server, "/v1/lora/scale", {"scale": 0.8, "adapter_name": "b"})
    stacked_id = song(server)
    assert status(server) == {"lora_loaded": True, "use_lora": True, "lora_scale": 0.8, "adapter_type": "lora",
                                   "scales": {"lora_a": 0.9, "b": 0.8}, "active_adapter": "b",
                                   "adapters": ["lora_a", "b"], "synthetic_default_mode": False}
    assert post(server, "/v1/lora/unload", {}).data == {"message": "✅ LoRA unloaded, using base model"}
    after_id = song(server)

    base_adapters, base_audio = finished(server, base_id)
    adapters, audio = finished(server, adapted_id)
    assert base_adapters == [] and [(a["name"], a["scale"]) for a in adapters] == [("lora_a", 0.4)]
    assert (audio - base_audio).abs().max().item() > 1e-3
    off_adapters, off_audio = finished(server, off_id)
    assert off_adapters == [] and torch.equal(off_audio, base_audio)
    stacked_adapters, _ = finished(server, stacked_id)
    assert [(a["name"], a["format"], a["scale"]) for a in stacked_adapters] == [("lora_a", "peft", 0.9),
                                                                                ("b", "comfyui", 0.8)]
    after_adapters, after_audio = finished(server, after_id)
    assert after_adapters == [] and torch.equal(after_audio, base_audio)


def test_lokr_file_in_a_sub_folder(server):
    reply = post(server, "/v1/lora/load", {"lora_path": "styles/lokr_weights.safetensors"})
    assert reply.status == 200, reply.body
    assert reply.data["message"].startswith("✅ LoKr loaded from ")
    assert status(server)["adapter_type"] == "lokr"
    assert post(server, "/v1/lora/toggle", {"use_lora": False}).data["message"] == "✅ LoKr disabled"


def test_refusals_leave_the_state_alone(server, lora_dir):
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(lora_dir / "lora_b.comfyui.safetensors"))
    save_file({k: (torch.randn(2, 48) if k.endswith("lora_down.weight") else v) for k, v in tensors.items()},
              str(lora_dir / "wide.safetensors"))
    (lora_dir / "broken.safetensors").write_bytes(b"\x00" * 40)
    cases = [({"lora_path": "nope"}, 400, "adapter not found"),
             ({"lora_path": "wide.safetensors"}, 400, "does not fit"),
             ({"lora_path": "broken.safetensors"}, 400, "not a valid safetensors file"),
             ({}, 400, "lora_path"),
             # names the file system refuses outright: a clear 400, no server folder in the message
             ({"lora_path": "a" * 300}, 400, "lora_path: is not a name this server's file system can read"),
             ({"lora_path": str(lora_dir / ("a" * 300))}, 400, "lora_path: is not a name"),
             ({"lora_path": "lora_a\x00.txt"}, 400, "lora_path: contains a NUL byte")]
    for body, code, message in cases:
        reply = post(server, "/v1/lora/load", body)
        assert reply.status == code and message in reply.error, (body, reply.body)
        if "a" * 300 in str(body) or "\x00" in str(body):
            assert str(lora_dir) not in reply.error
    assert not status(server)["lora_loaded"]
    # Soft errors come back as HTTP 200 with code 400, as the official server answers them.
    reply = post(server, "/v1/lora/toggle", {"use_lora": True})
    assert reply.status == 200 and reply.json()["code"] == 400 and "No LoRA adapter loaded" in reply.error
    post(server, "/v1/lora/load", {"lora_path": "lora_a"})
    reply = post(server, "/v1/lora/load", {"lora_path": "lora_b", "adapter_name": "lora_a"})
    assert reply.status == 400 and "already in use" in reply.error
    reply = post(server, "/v1/lora/scale", {"scale": 0.5, "adapter_name": "ghost"})
    assert reply.json()["code"] == 400 and "Unknown adapter: ghost" in reply.error
    reply = post(server, "/v1/lora/scale", {"scale": "loud"})
    assert reply.status == 400 and "scale" in reply.error
    assert status(server)["adapters"] == ["lora_a"]


def test_without_a_lora_folder_every_load_is_403(tiny_dir, tmp_path):
    config = ServerConfig.from_env(tmp_path / "results", env={})
    with LiveServer(Runtime(tiny_provider(tiny_dir), config)) as live:
        reply = http("POST", live.url + "/v1/lora/load", json={"lora_path": str(tiny_dir / "loras" / "lora_a")})
        assert reply.status == 403 and "ACESTEP_LORA_DIR" in reply.error
