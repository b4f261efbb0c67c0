"""Same card, same decision through every door: the CLI, the ComfyUI Load node and `serve`.

A simulated card (`MAX_CUDA_VRAM`) and one set of installed checkpoints (official folders, also
ComfyUI's models/acestep/) must give the same dtype, offload, LM, VAE window and limits through
`generate`'s flags, the Load node's widgets (with ComfyUI's own memory numbers) and `serve`'s
provider. Nothing is loaded: the decision is made before any weights are read.
"""

from __future__ import annotations

import os
from importlib import import_module

import pytest
import torch

import nodes_harness as h
from acestep_core.cli import build_parser
from acestep_core.cli import model_setup, serve
from acestep_core.errors import InsufficientMemoryError

GIB = 1024**3
OFFICIAL = {"acestep-v15-turbo": "acestep-v15-turbo-tiny", "vae": "vae-tiny",
            "Qwen3-Embedding-0.6B": "Qwen3-Embedding-tiny",
            "acestep-5Hz-lm-0.6B": "acestep-5Hz-lm-tiny", "acestep-5Hz-lm-1.7B": "acestep-5Hz-lm-tiny"}


@pytest.fixture()
def doors(tmp_path, tiny_dir, monkeypatch):
    """(checkpoint root, node loader module): one models/acestep/ folder seen by all three doors, and a
    ComfyUI host whose device is a 24 GB CUDA card with 20 GB free."""
    for env in ("ACESTEP_INIT_LLM", "ACESTEP_LM_MODEL_PATH", "ACESTEP_OFFLOAD_TO_CPU", "ACESTEP_OFFLOAD_DIT_TO_CPU",
                "ACESTEP_VAE_DECODE_CHUNK_SIZE", "ACESTEP_ALLOW_XL", "ACESTEP_CPU_BF16", "MAX_MPS_VRAM",
                "MAX_XPU_VRAM", "ACESTEP_CONFIG_PATH", "ACESTEP_DEVICE"):
        monkeypatch.delenv(env, raising=False)
    h.install_fake_host()
    import folder_paths
    from comfy import model_management

    dirs = {k: tmp_path / k for k in ("models", "output", "temp", "input")}
    for d in dirs.values():
        d.mkdir()
    root = dirs["models"] / "acestep"
    root.mkdir()
    for name, src in OFFICIAL.items():
        os.symlink(tiny_dir / src, root / name)
    folder_paths.reset(*(str(dirs[k]) for k in ("models", "output", "temp", "input")))
    monkeypatch.setattr(model_management, "get_torch_device", lambda: torch.device("cuda"))
    monkeypatch.setattr(model_management, "get_total_memory", lambda dev=None, torch_total_too=False: 24 * GIB)
    monkeypatch.setattr(model_management, "get_free_memory", lambda dev=None, torch_free_too=False: 20 * GIB)
    h.load_pack()
    return root, import_module(h.PACK_MODULE_NAME + ".nodes.loader_node")


def three_decisions(root, loader):
    parser = build_parser()
    cli = model_setup.plan_from_args(parser.parse_args(["generate", "--checkpoint-dir", str(root)])).decision
    node = loader.plan_for("acestep-v15-turbo", "auto", "auto", "auto", "auto", "auto")[2].decision
    provider = serve.provider_from_args(parser.parse_args(["serve", "--checkpoint-dir", str(root)]))
    return cli, node, provider


@pytest.mark.parametrize("gb", [6, 8, 16])
def test_cli_node_and_serve_decide_alike(doors, monkeypatch, gb):
    root, loader = doors
    monkeypatch.setenv("MAX_CUDA_VRAM", str(gb))
    cli, node, provider = three_decisions(root, loader)
    assert cli.simulated and node.simulated and provider.decision().simulated
    assert cli.total_gb == node.total_gb == gb
    assert cli.settings() == node.settings() == provider.decision().settings()
    # The serve process reports what it holds requests to (/v1/stats) from the same decision.
    assert provider.decision() is provider.engine.decision


def test_a_6_gb_card_is_decided_as_one(doors, monkeypatch):
    """What every door now does on a 6 GB card (serve used to load what a 24 GB card would)."""
    root, loader = doors
    monkeypatch.setenv("MAX_CUDA_VRAM", "6")
    cli, node, provider = three_decisions(root, loader)
    settings = provider.decision().settings()
    assert settings["tier"] == "tier2" and settings["device_type"] == "cuda"
    assert settings["offload_to_cpu"] and settings["offload_dit_to_cpu"]
    assert not settings["init_lm"] and provider.lm_name() is None  # no LM fits: serve offers none
    assert (settings["max_duration_s"], settings["max_batch"]) == (600, 1)
    assert settings["vae_chunk_frames"] == 128 and settings["dtype"] == "bfloat16"


def test_an_8_gb_card_runs_the_small_lm_everywhere(doors, monkeypatch):
    root, loader = doors
    monkeypatch.setenv("MAX_CUDA_VRAM", "8")
    cli, node, provider = three_decisions(root, loader)
    assert cli.lm_model == node.lm_model == provider.decision().lm_model == "0.6B"
    assert cli.init_lm and node.init_lm and provider.decision().init_lm
    assert provider.lm_name() == "acestep-5Hz-lm-0.6B"
    assert (cli.max_duration_s, cli.max_batch) == (480, 2)


def test_explicit_choices_win_the_same_way(doors, monkeypatch):
    """--dtype / --offload / --lm-model and the node's widgets override the tier identically."""
    root, loader = doors
    monkeypatch.setenv("MAX_CUDA_VRAM", "8")
    parser = build_parser()
    cli = model_setup.plan_from_args(parser.parse_args(
        ["generate", "--checkpoint-dir", str(root), "--dtype", "float16", "--offload", "off",
         "--lm-model", "1.7B"])).decision
    node = loader.plan_for("acestep-v15-turbo", "auto", "auto", "1.7B", "off", "fp16")[2].decision
    assert cli.settings() == node.settings()
    assert (cli.dtype, cli.lm_dtype, cli.offload_to_cpu, cli.lm_model, cli.init_lm) == \
        ("float16", "float16", False, "1.7B", True)
    assert any("loading 1.7B as asked" in r for r in cli.reasons)


def test_every_door_refuses_an_xl_model_that_cannot_fit(doors, monkeypatch, tiny_dir):
    root, loader = doors
    os.symlink(tiny_dir / "acestep-v15-xl-turbo-tiny", root / "acestep-v15-xl-turbo")
    monkeypatch.setenv("MAX_CUDA_VRAM", "8")
    parser = build_parser()
    with pytest.raises(InsufficientMemoryError, match="needs at least 12 GB"):
        model_setup.plan_from_args(parser.parse_args(
            ["generate", "--checkpoint-dir", str(root), "--dit", "acestep-v15-xl-turbo"]))
    with pytest.raises(InsufficientMemoryError, match="needs at least 12 GB"):
        serve.provider_from_args(parser.parse_args(["serve", "--checkpoint-dir", str(root),
                                                    "--dit", "acestep-v15-xl-turbo"]))
    with pytest.raises(Exception, match="needs at least 12 GB") as info:
        loader.plan_for("acestep-v15-xl-turbo", "auto", "auto", "auto", "auto", "auto")
    assert type(info.value).__name__ == "InsufficientMemoryError"


def test_serve_logs_and_reports_its_decision(tmp_path, tiny_dir):
    """A real `serve` on a simulated 6 GB card: the start-up log says what it decided and why, and
    /v1/stats reports the same decision."""
    import json
    import urllib.request

    from server_harness import ServeProcess

    (tmp_path / "out").mkdir()
    server = ServeProcess(tiny_dir, tmp_path / "out", tmp_path / "serve.log", env={"MAX_CUDA_VRAM": "6"})
    try:
        with urllib.request.urlopen(server.url + "/v1/stats", timeout=60) as reply:
            stats = json.loads(reply.read())["data"]
    finally:
        server.stop()
    block = stats["memory_decision"]
    assert block["tier"] == "tier2" and block["simulated"] and block["device_type"] == "cuda"
    assert block["offload_to_cpu"] and not block["init_lm"] and block["max_batch"] == 1
    assert f"memory decision: {block['summary']}" in server.log
    assert "No LM: tier2" in server.log  # the reasons are logged too
