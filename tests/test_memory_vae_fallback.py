"""VAE decode: tiled windows match one full decode; out-of-memory shrinks the window, then goes to the CPU."""

from __future__ import annotations

import pytest
import torch

from acestep_core.errors import ACEStepError
from acestep_core.memory.vae_fallback import (decode_fn_for_vae, decode_with_fallback, is_out_of_memory,
                                              tiled_decode)

HOP = 1920


def fake_decode_factory(max_chunk_on: dict[str, int], calls: list):
    """decode_fn that raises out-of-memory for windows above a per-device limit (None = always)."""

    def decode(latents, chunk, device):
        calls.append((device.type, chunk))
        limit = max_chunk_on.get(device.type)
        if limit is None or chunk > limit:
            if device.type == "mps":
                raise RuntimeError("MPS backend out of memory (MPS allocated: 9 GB)")
            if device.type == "cpu":
                raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 GB")
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return latents.repeat_interleave(HOP, dim=-1)[:, :2] * 0 + chunk

    return decode


def test_halves_the_window_until_it_fits_and_says_so():
    calls, logs = [], []
    latents = torch.zeros(1, 64, 500)
    out = decode_with_fallback(fake_decode_factory({"cuda": 64}, calls), latents, 256, "cuda", log=logs.append)
    assert calls == [("cuda", 256), ("cuda", 128), ("cuda", 64)]
    assert out.shape == (1, 2, 500 * HOP) and out[0, 0, 0].item() == 64
    assert logs == ["VAE decode ran out of memory on cuda with 256-frame windows; retrying with 128-frame windows.",
                    "VAE decode ran out of memory on cuda with 128-frame windows; retrying with 64-frame windows."]


def test_falls_back_to_the_cpu_after_the_floor():
    calls, logs = [], []
    out = decode_with_fallback(fake_decode_factory({"cpu": 1000}, calls), torch.zeros(1, 64, 10), 128,
                               "mps", log=logs.append, min_chunk_frames=32)
    assert calls == [("mps", 128), ("mps", 64), ("mps", 32), ("cpu", 128)]
    assert "decoding on the CPU instead" in logs[-1] and "32-frame windows" in logs[-1]
    assert out[0, 0, 0].item() == 128


def test_out_of_memory_everywhere_raises_a_clear_error():
    logs = []
    with pytest.raises(ACEStepError, match="ran out of memory on every device.*shorter song"):
        decode_with_fallback(fake_decode_factory({}, []), torch.zeros(1, 64, 250), 64, "cuda", log=logs.append)
    assert len(logs) >= 4


def test_other_errors_propagate_unchanged():
    def broken(latents, chunk, device):
        raise ValueError("wrong latent channels")

    with pytest.raises(ValueError, match="wrong latent channels"):
        decode_with_fallback(broken, torch.zeros(1, 64, 8), 64, "cuda", log=lambda m: None)


def test_is_out_of_memory():
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(RuntimeError("MPS backend out of memory"))
    assert is_out_of_memory(MemoryError())
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


def test_tiled_decode_matches_full_decode_of_the_tiny_vae(tiny_dir):
    from diffusers import AutoencoderOobleck

    vae = AutoencoderOobleck.from_pretrained(str(tiny_dir / "vae-tiny")).float().eval()
    torch.manual_seed(0)
    latents = torch.randn(2, 64, 80)
    with torch.inference_mode():
        full = vae.decode(latents).sample
    decode = decode_fn_for_vae(vae)
    for chunk in (64,):  # 3 windows per song, 15 frames of overlap
        out = decode(latents, chunk, torch.device("cpu"))
        assert out.shape == full.shape == (2, 2, 80 * HOP)
        torch.testing.assert_close(out, full, atol=1e-4, rtol=1e-4)


def test_tiled_decode_windows_cover_every_frame_once():
    seen = []

    def window(part):
        seen.append(part.shape[-1])
        return part[:, :1].repeat_interleave(3, dim=-1)  # "audio" = the frame values, hop 3

    latents = torch.arange(1000.0).view(1, 1, 1000)
    out = tiled_decode(window, latents, chunk_frames=256, overlap_frames=64)
    torch.testing.assert_close(out, latents.repeat_interleave(3, dim=-1))
    assert max(seen) <= 256


def test_fallback_around_the_engine_decode_matches_the_direct_decode(tiny_dir):
    from acestep_core.memory.vae_fallback import official_vae_decode_fn
    from acestep_core.vae import vae_decode
    from diffusers import AutoencoderOobleck

    vae = AutoencoderOobleck.from_pretrained(str(tiny_dir / "vae-tiny")).float().eval()
    torch.manual_seed(1)
    latents = torch.randn(1, 90, 64)  # [B, T, 64], the engine's layout
    direct = vae_decode(vae, latents, chunk_frames=64)
    calls, logs = [], []
    inner = official_vae_decode_fn(vae)

    def flaky(lat, chunk, device):  # "runs out of memory" above 64 frames on the accelerator
        calls.append((device.type, chunk))
        if device.type != "cpu" and chunk > 64:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return inner(lat, chunk, torch.device("cpu"))

    out = decode_with_fallback(flaky, latents, 128, "cuda", log=logs.append)
    assert calls == [("cuda", 128), ("cuda", 64)] and len(logs) == 1
    torch.testing.assert_close(out, direct)
