"""The /acestep routes as the pack mounts them in ComfyUI, on the stand-in host (always runs):
they reuse the model the graph loaded, run it through ComfyUI's memory manager, wait for
ComfyUI's queue to be idle, and answer only loopback clients without an API key."""

from __future__ import annotations

import threading
from importlib import import_module
from types import SimpleNamespace

import pytest
from aiohttp import web

import nodes_harness as h
from nodes_models import build_models_dir
from server_harness import LiveServer, http, query, release, result_items, wait_done

FAST = {"inference_steps": 2, "audio_duration": 10, "batch_size": 1, "thinking": False,
        "use_cot_caption": False, "use_cot_language": False, "prompt": "lofi"}


class FakePromptQueue:
    """ComfyUI's PromptQueue surface the gate reads: pending + running prompts."""

    def __init__(self):
        self.busy = threading.Event()

    def get_tasks_remaining(self) -> int:
        return 1 if self.busy.is_set() else 0


@pytest.fixture()
def comfy_pack(tmp_path, tiny_dir, comfy_tiny_dir):
    h.install_fake_host()
    import folder_paths

    dirs = {k: tmp_path / k for k in ("models", "output", "temp", "input")}
    for d in dirs.values():
        d.mkdir()
    folder_paths.reset(str(dirs["models"]), str(dirs["output"]), str(dirs["temp"]), str(dirs["input"]))
    build_models_dir(tmp_path, tiny_dir, comfy_tiny_dir)
    h.load_pack()
    yield dirs
    import_module(h.PACK_MODULE_NAME + ".nodes.model_cache").forget()


class RoutesOnly:
    """Serves a PromptServer-like RouteTableDef the way ComfyUI does (app.add_routes)."""

    def __init__(self, routes: web.RouteTableDef):
        self.routes = routes

    def __call__(self, runtime, prefix=""):
        app = web.Application()
        app.add_routes(self.routes)

        async def stop(_app):
            await runtime.close()

        app.on_cleanup.append(stop)
        return app


def test_routes_reuse_the_graph_model_and_wait_for_comfyui(comfy_pack, monkeypatch):
    import comfy.model_management as mm

    rest = import_module(h.PACK_MODULE_NAME + ".nodes.rest_routes")
    loader = import_module(h.PACK_MODULE_NAME + ".nodes.loader_node")
    monkeypatch.setattr(rest, "_registered", None)
    queue = FakePromptQueue()
    prompt_server = SimpleNamespace(routes=web.RouteTableDef(), prompt_queue=queue)
    runtime = rest.register_routes(prompt_server)
    paths = {r.path for r in prompt_server.routes}
    assert {"/acestep/health", "/acestep/release_task", "/acestep/query_result", "/acestep/v1/audio",
            "/acestep/v1/models", "/acestep/v1/stats", "/acestep/create_random_sample",
            "/acestep/format_input", "/acestep/v1/chat/completions"} <= paths
    assert runtime.result_root == (comfy_pack["output"] / "acestep_api").resolve()
    assert rest.register_routes(prompt_server) is runtime  # idempotent

    # the graph loaded a model (Load ACE-Step with ComfyUI's single files)
    graph_model = loader.load_model("acestep_v1.5_turbo.safetensors", "ace_1.5_vae.safetensors",
                                    "qwen_0.6b_ace15.safetensors", "none", "off", "auto")

    with LiveServer(runtime, app_factory=RoutesOnly(prompt_server.routes)) as live:
        base = live.url + "/acestep"
        assert http("GET", base + "/v1/models").json()["default_model"] == "acestep_v1.5_turbo"

        queue.busy.set()  # ComfyUI is running a prompt: the API job must wait
        reply = release(base, FAST)
        assert reply.status == 200, reply.body
        task_id = reply.data["task_id"]
        assert query(base, task_id)["status"] == 0
        assert http("GET", base + "/v1/stats").data["jobs"]["queued"] == 1
        loads_before = len(mm.load_calls)
        queue.busy.clear()

        item = wait_done(base, task_id)
        assert item["status"] == 1, item
        song = result_items(item)[0]
        assert song["dit_model"] == "acestep_v1.5_turbo"
        # the job ran on the graph's model, through ComfyUI's memory manager
        assert len(mm.load_calls) > loads_before
        loaded = {id(p) for call in mm.load_calls[loads_before:] for p in call["models"]}
        assert loaded & {id(p) for p in graph_model.patchers.values()}
        got = http("GET", base + song["file"])
        assert got.status == 200 and got.body[:3] == b"ID3"
        assert (comfy_pack["output"] / "acestep_api" / task_id / f"{task_id}_1.mp3").is_file()

        # JSON may name files in ComfyUI's input folder (resolution is covered in test_server_files)
        assert runtime.config.input_dirs == (comfy_pack["input"],)
        bad = release(base, dict(FAST, task_type="cover", src_audio_path="/etc/hostname"))
        assert bad.status == 400 and bad.error.startswith("src_audio_path:")


def test_remote_clients_need_a_key_in_comfyui(comfy_pack, monkeypatch):
    from acestep_core.server.routes import HTTPError, authorise

    rest = import_module(h.PACK_MODULE_NAME + ".nodes.rest_routes")
    runtime = rest.build_runtime(SimpleNamespace(prompt_queue=FakePromptQueue()))
    assert runtime.config.loopback_only
    local = SimpleNamespace(remote="127.0.0.1", headers={})
    remote = SimpleNamespace(remote="192.168.1.20", headers={})
    authorise(runtime, local)
    with pytest.raises(HTTPError) as info:
        authorise(runtime, remote)
    assert info.value.status == 403 and "ACESTEP_API_KEY" in str(info.value)
    runtime.config.api_key = "k"
    authorise(runtime, SimpleNamespace(remote="192.168.1.20", headers={"Authorization": "Bearer k"}))


def test_rest_in_comfyui_holds_the_load_nodes_decision_and_reads_every_lora_folder(comfy_pack, tmp_path, tiny_dir):
    """Jobs are held to the same memory decision as the graph's model (before one is loaded, the one the
    defaults would get), and /v1/lora/load finds adapters in every 'loras' folder the LoRA node lists."""
    import shutil

    import folder_paths

    from acestep_core.server import limits

    extra = tmp_path / "extra_loras"
    extra.mkdir()
    shutil.copy(tiny_dir / "loras" / "lora_b.comfyui.safetensors", extra / "mine.safetensors")
    folder_paths.add_model_folder_path("loras", str(extra))
    rest = import_module(h.PACK_MODULE_NAME + ".nodes.rest_routes")
    loader = import_module(h.PACK_MODULE_NAME + ".nodes.loader_node")
    runtime = rest.build_runtime(SimpleNamespace(prompt_queue=FakePromptQueue()))

    assert runtime.adapters.resolve("mine.safetensors") == (extra / "mine.safetensors").resolve()
    assert runtime.adapters.resolve(str(extra / "mine.safetensors")) == (extra / "mine.safetensors").resolve()
    with pytest.raises(PermissionError, match="outside the LoRA folders"):
        runtime.adapters.resolve("../elsewhere.safetensors")

    before = runtime.memory_decision
    assert before is not None and limits.describe(runtime.config, before)["memory_limits"] == "on"
    graph_model = loader.load_model("acestep_v1.5_turbo.safetensors", "ace_1.5_vae.safetensors",
                                    "qwen_0.6b_ace15.safetensors", "none", "off", "auto")
    assert runtime.memory_decision is graph_model.engine.decision
