"""ACE-Step LoRA node: choices from models/loras, chaining, independent branches, official strength
for PEFT folders, and the adapters named in the saved file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import av
import pytest
import torch

import nodes_harness as h
from nodes_models import build_models_dir, shorten_for_tiny

WORKFLOW = json.loads((h.REPO_ROOT / "workflows" / "api" / "lora.api.json").read_text())


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_dir, comfy_tiny_dir):
    root = tmp_path_factory.mktemp("comfy")
    h.install_fake_host()
    import folder_paths

    models = build_models_dir(root, tiny_dir, comfy_tiny_dir)
    (models / "loras" / "sub").mkdir()
    os.symlink(tiny_dir / "loras" / "lora_a.comfyui.safetensors", models / "loras" / "sub" / "lora_a.comfyui.safetensors")
    dirs = {k: root / k for k in ("output", "temp", "input")}
    for d in dirs.values():
        d.mkdir()
    folder_paths.reset(str(models), str(dirs["output"]), str(dirs["temp"]), str(dirs["input"]))
    _, node_map = h.load_pack()
    return node_map, dirs, models


def _run(node_map, prompt):
    return h.execute_prompt(shorten_for_tiny(prompt), node_map, extra_pnginfo={"workflow": {"name": "lora"}})


def _only(lora, strength=1.0):
    """The shipped graph with a single LoRA node (node 3 removed) set to `lora`."""
    prompt = json.loads(json.dumps(WORKFLOW))
    del prompt["3"]
    prompt["2"]["inputs"].update(lora=lora, strength=strength)
    prompt["4"]["inputs"]["model"] = ["2", 0]
    return prompt


def test_choices_list_peft_folders_and_files_in_sub_folders(env):
    node_map, _, _ = env
    schema = node_map["ACE15S_LoRA"].define_schema()
    options = next(i for i in schema.inputs if i.id == "lora").options["options"]
    assert options == ["ace15s_example_lora", "ace15s_example_lora_b.safetensors", "sub/lora_a.comfyui.safetensors"]
    module = __import__(f"{h.PACK_MODULE_NAME}.nodes.lora_node", fromlist=["resolve_lora"])
    assert module.resolve_lora("../loras/ace15s_example_lora") is not None  # stays inside: allowed
    assert module.resolve_lora("../vae/ace_1.5_vae.safetensors") is None
    assert module.resolve_lora("ace15s_example_lora/adapter_model.safetensors").name == "ace15s_example_lora"


def test_shipped_graph_two_independent_models_and_tagged_files(env):
    node_map, dirs, _ = env
    result = _run(node_map, WORKFLOW)
    results = result["results"]
    base_model, lora_model, stacked_model = results["1"][0], results["2"][0], results["3"][0]
    assert base_model.adapters == () and len(lora_model.adapters) == 1 and len(stacked_model.adapters) == 2
    assert stacked_model.pipeline is base_model.pipeline  # one set of weights
    with_loras, base = results["4"][1]["samples"], results["6"][1]["samples"]
    assert (with_loras - base).abs().max().item() > 1e-3
    recorded = results["4"][0]["acestep"]["params"]["adapters"]
    assert [(a["name"], a["format"], a["scale"]) for a in recorded] == [
        ("ace15s_example_lora", "peft", 1.0), ("ace15s_example_lora_b", "comfyui", 0.8)]
    assert results["6"][0]["acestep"]["params"]["adapters"] == []
    # The saved file names its adapters.
    saved = result["outputs"]["5"]["audio"][0]
    with av.open(str(Path(dirs["output"]) / saved["subfolder"] / saved["filename"])) as c:
        tags = {k.lower(): v for k, v in c.metadata.items()}
    assert "peft ace15s_example_lora x1.0" in tags["comment"] and "comfyui ace15s_example_lora_b x0.8" in tags["comment"]
    assert [a["name"] for a in json.loads(tags["acestep"])["adapters"]] == ["ace15s_example_lora", "ace15s_example_lora_b"]


def test_peft_folder_loads_at_the_official_strength(env):
    """The PEFT folder (alpha in its config) and the ComfyUI file of the same weights (alpha tensors)
    give the same song at the same strength: no 'too weak' PEFT adapters."""
    node_map, _, _ = env
    folder = _run(node_map, _only("ace15s_example_lora", 0.7))["results"]["4"][1]["samples"]
    comfy = _run(node_map, _only("sub/lora_a.comfyui.safetensors", 0.7))["results"]["4"][1]["samples"]
    weaker = _run(node_map, _only("sub/lora_a.comfyui.safetensors", 0.35))["results"]["4"][1]["samples"]
    assert torch.allclose(folder, comfy, atol=1e-6, rtol=0)
    assert (folder - weaker).abs().max().item() > 1e-3


def test_missing_or_unfit_lora_is_a_clear_error(env, tiny_dir):
    node_map, _, models = env
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(tiny_dir / "loras" / "lora_b.comfyui.safetensors"))
    save_file({k: (torch.randn(2, 48) if k.endswith("lora_down.weight") else v) for k, v in tensors.items()},
              str(models / "loras" / "wide.safetensors"))
    loader = node_map["ACE15S_LoadModel"].execute(**WORKFLOW["1"]["inputs"]).args[0]
    errors = __import__(f"{h.PACK_MODULE_NAME}.acestep_core.errors", fromlist=["AdapterError"])  # the pack's own
    node = node_map["ACE15S_LoRA"]
    with pytest.raises(errors.InputError, match="not found in models/loras"):
        node.execute(model=loader, lora="gone.safetensors", strength=1.0)
    with pytest.raises(errors.AdapterError, match=r"does not fit .*adapter A \[2, 48\]"):
        node.execute(model=loader, lora="wide.safetensors", strength=1.0)
    # Weights that would turn the song to NaN are refused here, not when the audio is saved.
    save_file({k: v * float("nan") for k, v in tensors.items()}, str(models / "loras" / "nan.safetensors"))
    with pytest.raises(errors.AdapterError, match=r"adapter 'nan' has non-finite weights in diffusion_model\."):
        node.execute(model=loader, lora="nan.safetensors", strength=1.0)
    assert loader.adapters == ()
    strength = next(i for i in node.define_schema().inputs if i.id == "strength")
    limit = __import__(f"{h.PACK_MODULE_NAME}.acestep_core.constants", fromlist=["x"]).ADAPTER_SCALE_MAX
    assert (strength.options["min"], strength.options["max"]) == (-limit, limit)
