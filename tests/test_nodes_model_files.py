"""Load ACE-Step with only ComfyUI's own files: what `auto` picks, the all-in-one checkpoint, and what the
loader and the LM nodes say when something is missing."""

from __future__ import annotations

import os
from importlib import import_module

import pytest
import torch

import nodes_harness as h
from nodes_models import AIO_NAME, build_models_dir

TURBO = "acestep_v1.5_turbo.safetensors"


@pytest.fixture()
def comfy_only(tmp_path, tiny_dir, comfy_tiny_dir, monkeypatch):
    """ComfyUI files only (no models/acestep/ folders) behind the stand-in host; ComfyUI's bundled Qwen
    tokenizer is played by the tiny fixture's tokenizer."""
    h.install_fake_host()
    import folder_paths

    models = build_models_dir(tmp_path, tiny_dir, comfy_tiny_dir, official=False)
    dirs = {k: tmp_path / k for k in ("output", "temp", "input")}
    for d in dirs.values():
        d.mkdir()
    folder_paths.reset(str(models), str(dirs["output"]), str(dirs["temp"]), str(dirs["input"]))
    _, node_map = h.load_pack()
    host = import_module(h.PACK_MODULE_NAME + ".nodes.host")
    monkeypatch.setattr(host, "bundled_qwen_tokenizer_dir", lambda: str(tiny_dir / "Qwen3-Embedding-tiny"))
    loader = import_module(h.PACK_MODULE_NAME + ".nodes.loader_node")
    return node_map, loader, models


def _errors_module():
    return import_module(h.PACK_MODULE_NAME + ".acestep_core.errors")


def test_auto_takes_comfyuis_own_files(comfy_only):
    _, loader, models = comfy_only
    paths, _, _ = loader.plan_for(TURBO, "auto", "auto", "none", "auto", "auto")
    assert paths.vae == str(models / "vae" / "ace_1.5_vae.safetensors")
    assert paths.text_encoder == str(models / "text_encoders" / "qwen_0.6b_ace15.safetensors")


@pytest.mark.parametrize("folder,kind,expected", [
    ("vae", "VAE", "ace_1.5_vae.safetensors in models/vae/"),
    ("text_encoders", "Text encoder", "qwen_0.6b_ace15.safetensors in models/text_encoders/"),
])
def test_auto_with_nothing_installed_says_what_to_put_where(comfy_only, folder, kind, expected):
    _, loader, models = comfy_only
    for name in ("ace_1.5_vae.safetensors", "qwen_0.6b_ace15.safetensors"):
        if (models / folder / name).exists():
            os.remove(models / folder / name)
    with pytest.raises(_errors_module().CheckpointError, match=f"{kind} 'auto' found no .*Put ComfyUI's {expected}"):
        loader.plan_for(TURBO, "auto", "auto", "none", "auto", "auto")


def test_all_in_one_is_offered_and_auto_takes_its_own_parts(comfy_only):
    """The AIO file from models/checkpoints/ is a DiT choice; with auto its VAE and text encoder are used
    (not the separate files beside it), and the song equals the one from the separate files, which
    hold the same weights."""
    node_map, loader, models = comfy_only
    # Other models' checkpoints in that folder are not offered, even with "ace" in the name.
    os.symlink(models / "vae" / "ace_1.5_vae.safetensors", models / "checkpoints" / "ace_step_v1_3.5b.safetensors")
    options = {i.id: i.options["options"] for i in node_map["ACE15S_LoadModel"].define_schema().inputs}
    assert options["dit"] == ["acestep_v1.5_base.safetensors", TURBO, AIO_NAME]
    paths, _, _ = loader.plan_for(AIO_NAME, "auto", "auto", "none", "auto", "auto")
    assert paths.dit == str(models / "checkpoints" / AIO_NAME) and paths.vae is None and paths.text_encoder is None

    aio = loader.load_model(AIO_NAME, "auto", "auto", "none", "auto", "fp32")
    assert (aio.decision.vae, aio.decision.text_encoder) == (f"{AIO_NAME} (its own)",) * 2
    split = loader.load_model(TURBO, "auto", "auto", "none", "auto", "fp32")
    t2m = node_map["ACE15S_Text2Music"]
    songs = [t2m.execute(model=m, caption="lo-fi", lyrics="", duration=6.0, bpm=0, keyscale="auto",
                         timesignature="auto", language="auto", seed=3, steps=8, shift=3.0, guidance=7.0,
                         batch_size=1).args[0]["waveform"] for m in (aio, split)]
    assert songs[0].shape[-1] == 6 * 48000 and torch.equal(songs[0], songs[1])


def test_a_missing_lm_size_names_where_it_comes_from(comfy_only):
    _, loader, _ = comfy_only
    error = _errors_module().CheckpointError
    with pytest.raises(error) as info:
        loader.plan_for(TURBO, "auto", "auto", "0.6B", "auto", "auto")
    message = str(info.value)
    assert "acestep-5Hz-lm-0.6B/ in models/acestep/" in message and "Installed LMs: 1.7B" in message
    assert "qwen_0.6b_ace15.safetensors is the text encoder, not this LM" in message
    with pytest.raises(error, match="acestep-5Hz-lm-4B/ in models/acestep/ or qwen_4b_ace15.safetensors in "
                                    "models/text_encoders/"):
        loader.plan_for(TURBO, "auto", "auto", "4B", "auto", "auto")


def test_lm_node_without_lm_says_why_and_what_to_set(comfy_only):
    """lm auto on a CPU leaves the LM off: the LM node says auto chose none, why, and to pick a size,
    rather than telling the user to set auto."""
    node_map, loader, _ = comfy_only
    model = loader.load_model(TURBO, "auto", "auto", "auto", "auto", "auto")
    if model.planner is not None:
        pytest.skip("the memory decision turned the LM on here")
    think = node_map["ACE15S_LMThinking"]
    with pytest.raises(_errors_module().InputError) as info:
        think.execute(model=model, caption="x", lyrics="", duration=10.0, bpm=120, keyscale="C major",
                      timesignature="4", language="en", lm_temperature=0.85, lm_cfg_scale=2.0, lm_top_k=0,
                      lm_top_p=0.9, lm_negative_prompt="NO USER INPUT", lm_seed=1, use_cot_caption=False,
                      generate_codes=True)
    message = str(info.value)
    assert "'lm' auto chose no LM on this machine (it is off by default on the CPU" in message
    assert "Set 'lm' to an installed size explicitly (1.7B)" in message
    assert "to auto," not in message
    assert "set 'lm' to 1.7B to load one" in model.describe()  # the loader's info says the same


def test_no_lm_messages_follow_the_choice():
    h.install_fake_host()
    h.load_pack()
    lm_nodes = import_module(h.PACK_MODULE_NAME + ".nodes.lm_nodes")
    decision = import_module(h.PACK_MODULE_NAME + ".nodes.model").LoadDecision
    base = dict(dit="d", vae="v", text_encoder="t", lm="none", offload=False, dtype="float32", device="cpu")
    nothing = lm_nodes.no_lm_message(decision(**base, lm_choice="auto", installed_lms=()))
    assert "no 5 Hz LM is installed" in nothing and "qwen_1.7b_ace15.safetensors in models/text_encoders/" in nothing
    off = lm_nodes.no_lm_message(decision(**base, lm_choice="none", installed_lms=("0.6B", "1.7B")))
    assert "'lm' is set to none. Set 'lm' to an installed size (0.6B, 1.7B) or to auto." in off
    small = lm_nodes.no_lm_message(decision(**base, lm_choice="auto", installed_lms=("1.7B",),
                                            lm_off_reason="tier1 (4 GB) has no room for one"))
    assert "auto chose no LM on this machine (tier1 (4 GB) has no room for one)" in small
