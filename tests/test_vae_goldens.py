"""The VAE against the reference goldens, loaded from every supported checkpoint spelling."""

from __future__ import annotations

import json

import pytest
import torch

from acestep_core.vae import load_vae, read_safetensors, vae_decode, vae_encode
from conftest import load_golden

# float32 CPU against the reference's float32 CPU run (README of the tiny fixtures, §3).
POSTERIOR_ATOL = 1e-5
AUDIO_ATOL = 2e-3


@pytest.fixture(scope="module")
def golden():
    return load_golden("component_vae")


@pytest.fixture(scope="module")
def source_1s():
    return load_golden("source_audio")["src_a"][:, :48000]


@pytest.fixture(scope="module")
def tiny_vae_config(tiny_dir):
    return json.loads((tiny_dir / "vae-tiny" / "config.json").read_text())


@pytest.fixture(scope="module")
def official_vae(tiny_dir):
    return load_vae(tiny_dir / "vae-tiny")


def _bdt(x: torch.Tensor) -> torch.Tensor:
    """Golden [B, 64, T] -> our [B, T, 64]."""
    return x.transpose(1, 2)


def test_posterior_matches_golden(official_vae, golden, source_1s):
    latents, mean, std = vae_encode(official_vae, source_1s[None], eps=_bdt(golden["in.eps"]))
    assert mean.shape == (1, 25, 64) and std.shape == (1, 25, 64) and latents.shape == (1, 25, 64)
    torch.testing.assert_close(mean, _bdt(golden["out.posterior_mean"]), atol=POSTERIOR_ATOL, rtol=0)
    torch.testing.assert_close(std, _bdt(golden["out.posterior_std"]), atol=POSTERIOR_ATOL, rtol=0)
    # sample = mean + std * eps: it carries the mean's and the std's error, the latter scaled by |eps|
    # (up to 3.8 here), so its bound follows from theirs (another CPU's kernels reach 1.05e-5 here).
    eps = _bdt(golden["in.eps"])
    torch.testing.assert_close(latents, mean + std * eps, atol=1e-6, rtol=0)
    error = (latents - _bdt(golden["out.posterior_sample"])).abs()
    assert bool((error <= POSTERIOR_ATOL * (1 + eps.abs())).all()), error.max()


def test_encode_without_sampling_returns_the_mean(official_vae, source_1s):
    short = source_1s[:, : 4 * 1920]  # [2, N] input accepted
    latents, mean, std = vae_encode(official_vae, short, sample=False)
    assert latents.shape == (1, 4, 64)
    torch.testing.assert_close(latents, mean, atol=0, rtol=0)
    assert (std > 1e-4).all()


def test_encode_sampling_with_generator_is_reproducible(official_vae, source_1s):
    short = source_1s[:, : 4 * 1920]
    first, mean, std = vae_encode(official_vae, short, generator=torch.Generator().manual_seed(7))
    again = vae_encode(official_vae, short, generator=torch.Generator().manual_seed(7))[0]
    torch.testing.assert_close(first, again, atol=0, rtol=0)
    eps = torch.randn(mean.shape, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(first, mean + std * eps)


def test_decode_matches_golden(official_vae, golden):
    audio = vae_decode(official_vae, _bdt(golden["out.posterior_mean"]))
    assert audio.shape == (1, 2, 48000) and audio.dtype == torch.float32 and audio.device.type == "cpu"
    torch.testing.assert_close(audio, golden["out.decoded_from_mean"], atol=AUDIO_ATOL, rtol=0)


def test_tiled_decode_matches_reference_tiling(official_vae, golden, manifest):
    case = manifest["cases"]["component_vae"]
    chunk, overlap = case["tiled_chunk_size"], case["tiled_overlap"]
    audio = vae_decode(official_vae, _bdt(golden["out.posterior_mean"]), chunk_frames=chunk, overlap_frames=overlap)
    torch.testing.assert_close(audio, golden["out.tiled_decoded_from_mean"], atol=AUDIO_ATOL, rtol=0)
    # The tiny VAE's receptive field exceeds 4 frames, so this tiling really differs from one pass:
    assert (audio - golden["out.decoded_from_mean"]).abs().max() > 0.05


COMFY_FILES = [
    "vae/ace_1.5_vae.safetensors",  # weight_g / weight_v
    "vae/ace_1.5_vae_comfy_resaved.safetensors",  # parametrizations.weight.original0/1
    "checkpoints/ace_step_1.5_turbo_aio.safetensors",  # vae.* keys inside the all-in-one file
]


@pytest.mark.parametrize("relative", COMFY_FILES)
def test_comfyui_files_load_the_same_weights(relative, comfy_tiny_dir, tiny_vae_config, official_vae, golden):
    vae = load_vae(comfy_tiny_dir / relative, config_override=tiny_vae_config)
    ours, reference = vae.state_dict(), official_vae.state_dict()
    assert ours.keys() == reference.keys()
    for key, value in reference.items():
        torch.testing.assert_close(ours[key], value, atol=0, rtol=0, msg=key)
    audio = vae_decode(vae, _bdt(golden["out.posterior_mean"]))
    torch.testing.assert_close(audio, golden["out.decoded_from_mean"], atol=AUDIO_ATOL, rtol=0)


def test_state_dict_extracted_from_the_all_in_one_checkpoint(comfy_tiny_dir, tiny_vae_config, official_vae):
    aio = comfy_tiny_dir / COMFY_FILES[2]
    tensors = read_safetensors(aio, prefix="vae.")
    assert tensors and all(k.startswith("vae.") for k in tensors)
    vae = load_vae(aio, state_dict=tensors, config_override=tiny_vae_config)
    for key, value in official_vae.state_dict().items():
        torch.testing.assert_close(vae.state_dict()[key], value, atol=0, rtol=0, msg=key)


def test_dtype_and_eval_mode(tiny_dir):
    vae = load_vae(tiny_dir / "vae-tiny", dtype=torch.bfloat16)
    assert {p.dtype for p in vae.parameters()} == {torch.bfloat16}
    assert not vae.training and not any(p.requires_grad for p in vae.parameters())
    audio = vae_decode(vae, torch.zeros(1, 3, 64))
    assert audio.shape == (1, 2, 3 * 1920) and audio.dtype == torch.float32
