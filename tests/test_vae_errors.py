"""Every way a VAE checkpoint can be wrong ends in one CheckpointError naming the file and the problem."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from acestep_core.errors import CheckpointError
from acestep_core.vae import load_vae


@pytest.fixture()
def vae_copy(tiny_dir, tmp_path):
    """A writable copy of the tiny official VAE folder."""
    target = tmp_path / "vae"
    shutil.copytree(tiny_dir / "vae-tiny", target)
    return target


@pytest.fixture(scope="module")
def tiny_config(tiny_dir):
    return json.loads((tiny_dir / "vae-tiny" / "config.json").read_text())


WEIGHTS = "diffusion_pytorch_model.safetensors"


def test_missing_path(tmp_path):
    with pytest.raises(CheckpointError, match="not found") as info:
        load_vae(tmp_path / "nowhere")
    assert "nowhere" in str(info.value)


def test_folder_without_weights(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match=WEIGHTS):
        load_vae(tmp_path)


def test_not_a_safetensors_file(tmp_path):
    pickle_like = tmp_path / "vae.ckpt"
    pickle_like.write_bytes(b"\x80\x04not a safetensors file")
    with pytest.raises(CheckpointError, match="only .safetensors"):
        load_vae(pickle_like)


def test_truncated_safetensors(vae_copy):
    weights = vae_copy / WEIGHTS
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as info:
        load_vae(vae_copy)
    assert str(weights) in str(info.value)


def test_garbage_file(tmp_path, tiny_config):
    garbage = tmp_path / "ace_1.5_vae.safetensors"
    garbage.write_bytes(b"this is not a safetensors file at all" * 4)
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        load_vae(garbage, config_override=tiny_config)


def test_unreadable_config(vae_copy):
    (vae_copy / "config.json").write_text("{ not json")
    with pytest.raises(CheckpointError, match="config"):
        load_vae(vae_copy)


def _edit_weights(folder, edit):
    weights = folder / WEIGHTS
    tensors = load_file(str(weights))
    edit(tensors)
    save_file(tensors, str(weights))


def test_wrong_shape(vae_copy):
    def shrink(tensors):
        tensors["decoder.conv1.weight_v"] = tensors["decoder.conv1.weight_v"][:, :32].contiguous()

    _edit_weights(vae_copy, shrink)
    with pytest.raises(CheckpointError, match=r"wrong shapes: decoder\.conv1\.weight_v: file \(4, 32, 7\) vs model \(4, 64, 7\)"):
        load_vae(vae_copy)


def test_missing_and_unexpected_keys(vae_copy):
    def rename(tensors):
        tensors["decoder.conv1.weight_x"] = tensors.pop("decoder.conv1.weight_g")
        tensors["extra.thing"] = torch.zeros(1)

    _edit_weights(vae_copy, rename)
    with pytest.raises(CheckpointError) as info:
        load_vae(vae_copy)
    message = str(info.value)
    assert "missing keys: decoder.conv1.weight_g" in message
    assert "unexpected keys:" in message and "extra.thing" in message and "decoder.conv1.weight_x" in message
    assert str(vae_copy / WEIGHTS) in message


def test_comfyui_file_without_matching_config_is_rejected(comfy_tiny_dir):
    # Without the tiny config the published (real-size) config is used: every conv mismatches.
    with pytest.raises(CheckpointError, match=r"wrong shapes: .*\(\d+ in all\)"):
        load_vae(comfy_tiny_dir / "vae" / "ace_1.5_vae.safetensors")


def test_non_vae_checkpoint_is_rejected(comfy_tiny_dir, tiny_config):
    with pytest.raises(CheckpointError, match="missing keys"):
        load_vae(comfy_tiny_dir / "diffusion_models" / "acestep_v1.5_turbo.safetensors", config_override=tiny_config)


def test_invalid_config_values(vae_copy):
    config = json.loads((vae_copy / "config.json").read_text())
    config["downsampling_ratios"] = "not a list"
    (vae_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="invalid VAE config"):
        load_vae(vae_copy)
