"""Tiled VAE decode / encode on inputs longer than one tile, memory bounds and the chunk policy."""

from __future__ import annotations

import pytest
import torch

from acestep_core.errors import InputError
from acestep_core.vae import decode_chunk_frames, encode_chunk_seconds, load_vae, vae_decode, vae_encode
from conftest import load_golden

GIB = 1024**3


@pytest.fixture(scope="module")
def vae(tiny_dir):
    return load_vae(tiny_dir / "vae-tiny")


def _record_decode_windows(vae, monkeypatch) -> list[int]:
    """Wrap the real decode to record how many latent frames each call received."""
    seen: list[int] = []
    original = vae.decode

    def recording_decode(z, *args, **kwargs):
        seen.append(z.shape[-1])
        return original(z, *args, **kwargs)

    monkeypatch.setattr(vae, "decode", recording_decode)
    return seen


def test_tiled_decode_equals_one_pass_when_overlap_covers_the_receptive_field(vae, monkeypatch):
    latents = torch.randn(1, 200, 64, generator=torch.Generator().manual_seed(0))
    whole = vae_decode(vae, latents, chunk_frames=256)
    windows = _record_decode_windows(vae, monkeypatch)
    tiled = vae_decode(vae, latents, chunk_frames=64, overlap_frames=16)
    # stride 32 -> 7 windows, none longer than the chunk
    assert len(windows) == 7 and max(windows) == 64
    assert tiled.shape == whole.shape == (1, 2, 200 * 1920)
    # The tiny decoder sees about ±8 latent frames, so a 16-frame overlap hides every seam ...
    torch.testing.assert_close(tiled, whole, atol=1e-4, rtol=0)
    # ... while a 2-frame overlap does not (shows the comparison above can fail).
    seams = vae_decode(vae, latents, chunk_frames=64, overlap_frames=2)
    assert (seams - whole).abs().max() > 1e-2


def test_no_tiling_when_latents_fit_in_one_chunk(vae, monkeypatch):
    windows = _record_decode_windows(vae, monkeypatch)
    vae_decode(vae, torch.zeros(1, 256, 64), chunk_frames=256, overlap_frames=64)
    assert windows == [256]


def test_batch_items_decode_one_at_a_time_and_independently(vae, monkeypatch):
    latents = torch.randn(2, 24, 64, generator=torch.Generator().manual_seed(1))
    single = vae_decode(vae, latents[1:2], chunk_frames=16, overlap_frames=4)
    windows = _record_decode_windows(vae, monkeypatch)
    progress = []
    batch = vae_decode(vae, latents, chunk_frames=16, overlap_frames=4, progress=lambda d, t: progress.append((d, t)))
    assert batch.shape == (2, 2, 24 * 1920)
    torch.testing.assert_close(batch[1:2], single, atol=0, rtol=0)
    assert windows == [12, 16, 12] * 2  # one item per call; ceil(24 / 8) windows each
    assert progress == [(i, 6) for i in range(1, 7)]


def test_reference_overlap_reduction_for_small_chunks(vae, monkeypatch):
    # chunk 16 with overlap 64 -> the reference halves the overlap to 4 (stride 8): the golden tiling.
    golden = load_golden("component_vae")
    latents = golden["out.posterior_mean"].transpose(1, 2)
    audio = vae_decode(vae, latents, chunk_frames=16, overlap_frames=64)
    torch.testing.assert_close(audio, golden["out.tiled_decoded_from_mean"], atol=2e-3, rtol=0)


@pytest.mark.slow
def test_long_song_decodes_in_bounded_windows(vae, monkeypatch):
    # 3 minutes (a 10-minute song is the same loop, 3.3x longer; kept short for CI time).
    frames = 4500
    latents = torch.randn(1, frames, 64, generator=torch.Generator().manual_seed(2))
    windows = _record_decode_windows(vae, monkeypatch)
    audio = vae_decode(vae, latents, chunk_frames=512, overlap_frames=64)
    assert audio.shape == (1, 2, frames * 1920)
    assert max(windows) <= 512 and len(windows) == -(-frames // (512 - 128))
    # Activation memory scales with the window (never more than 512 frames here), not the song;
    # the output is one preallocated CPU buffer.
    assert torch.isfinite(audio).all() and audio.abs().max() > 0


def test_tiled_encode_equals_one_pass_with_enough_overlap(vae):
    audio = load_golden("source_audio")["src_a"][:, : 40 * 1920]  # 1.6 s
    _, mean, std = vae_encode(vae, audio, sample=False)
    # 1.28 s tiles, 0.32 s (8 frames) overlap each side -> stride 0.64 s, 3 tiles.
    _, tiled_mean, tiled_std = vae_encode(vae, audio, chunk_seconds=1.28, overlap_seconds=0.32, sample=False)
    assert tiled_mean.shape == mean.shape == (1, 40, 64)
    torch.testing.assert_close(tiled_mean, mean, atol=1e-4, rtol=0)
    torch.testing.assert_close(tiled_std, std, atol=1e-4, rtol=0)


def test_decode_chunk_policy_follows_the_reference_table():
    assert decode_chunk_frames(30 * GIB, "cuda") == 512
    assert decode_chunk_frames(24 * GIB, "cuda") == 512
    assert decode_chunk_frames(20 * GIB, "cuda") == 384
    assert decode_chunk_frames(12 * GIB, "cuda") == 256
    assert decode_chunk_frames(8 * GIB, "cuda") == 128
    assert decode_chunk_frames(None, "cpu") == 256
    # the CPU takes the larger tiles when its free RAM allows, never below the official CPU tile
    assert [decode_chunk_frames(g * GIB, "cpu") for g in (30, 20, 12, 4)] == [512, 384, 256, 256]
    assert decode_chunk_frames(None, "mps") == 512


def test_encode_chunk_policy_follows_the_reference():
    assert encode_chunk_seconds(24 * GIB, "cuda") == 30
    assert encode_chunk_seconds(8 * GIB, "cuda") == 15
    assert encode_chunk_seconds(None, "cpu") == 15


@pytest.mark.parametrize(
    "latents, kwargs",
    [
        (torch.zeros(1, 10, 32), {}),  # wrong channel count
        (torch.zeros(10, 64), {}),  # no batch axis
        (torch.zeros(1, 0, 64), {}),  # nothing to decode
        (torch.zeros(1, 10, 64), {"chunk_frames": 0}),
    ],
)
def test_decode_rejects_bad_input(vae, latents, kwargs):
    with pytest.raises(InputError):
        vae_decode(vae, latents, **kwargs)


def test_encode_rejects_bad_input(vae):
    with pytest.raises(InputError, match="2-channel"):
        vae_encode(vae, torch.zeros(1, 1, 4000))
    with pytest.raises(InputError, match="too short"):
        vae_encode(vae, torch.zeros(1, 2, 100))
    with pytest.raises(InputError, match="eps"):
        vae_encode(vae, torch.zeros(1, 2, 1920), eps=torch.zeros(1, 64, 2))


# ---- the CPU window grows to what RAM holds (vae.cpu_decode_window) ----------------------------

GB = 1 << 30


@pytest.mark.parametrize("frames, chunk, dtype, available_gb, total_gb, expected", [
    (750, 384, torch.bfloat16, 20, 24, 750),     # a 30 s song fits: one pass
    (750, 384, torch.float32, 20, 24, 750),      # also in float32 (6 MiB a frame: 4.4 GiB)
    (6000, 384, torch.bfloat16, 20, 24, 1024),   # a 240 s song: the longest window, not one pass
    (750, 256, torch.float32, 5, 8, 512),        # 5 - 2 GiB reserve = 3 GiB: 512 frames of 6 MiB
    (750, 256, torch.bfloat16, 5, 8, 750),       # the same RAM holds the song in half precision (3 MiB)
    (750, 256, torch.float32, 2, 8, 256),        # nothing to spare: the decision's window, never less
    (750, 256, torch.float32, 16, 100, 256),     # the reserve is 15 % of RAM where that is more
    (100, 384, torch.bfloat16, 20, 24, 384),     # a short song is one window anyway
])
def test_cpu_decode_window_grows_to_what_ram_holds(frames, chunk, dtype, available_gb, total_gb, expected):
    from acestep_core.vae import cpu_decode_window

    assert cpu_decode_window(frames, chunk, dtype, available_gb * GB, total_gb * GB) == expected


@pytest.fixture
def decode_windows(monkeypatch):
    """The window each pipeline decode asks vae_decode for (the decode itself still runs)."""
    import acestep_core.vae as vae_module

    seen: list[int] = []
    real = vae_module.vae_decode

    def spy(vae, latents, chunk_frames=None, **kwargs):
        seen.append(chunk_frames)
        return real(vae, latents, chunk_frames=chunk_frames, **kwargs)

    monkeypatch.setattr(vae_module, "vae_decode", spy)
    return seen


def test_a_cpu_pipeline_decodes_a_song_that_fits_in_one_pass(decode_windows, monkeypatch, tiny_dir):
    from acestep_core.pipeline import ACEStepPipeline

    pipe = ACEStepPipeline.from_pretrained(dit=tiny_dir / "acestep-v15-turbo-tiny", vae=tiny_dir / "vae-tiny",
                                           text_encoder=tiny_dir / "Qwen3-Embedding-tiny", dtype="float32")
    latents = torch.randn(1, 300, 64, generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr("acestep_core.pipeline.system_ram", lambda: (24 * GB, 20 * GB))
    one_pass = pipe.decode(latents)
    monkeypatch.setattr("acestep_core.pipeline.system_ram", lambda: (8 * GB, 2 * GB))  # no RAM to spare
    tiled = pipe.decode(latents)
    assert decode_windows == [300, 256]
    assert one_pass.shape == tiled.shape == (1, 2, 300 * 1920)
    # a window the caller fixed is kept, whatever the RAM
    monkeypatch.setattr("acestep_core.pipeline.system_ram", lambda: (24 * GB, 20 * GB))
    fixed = ACEStepPipeline(pipe.dit, pipe.vae, pipe.text_encoder, vae_chunk_frames=128)
    fixed.decode(latents)
    assert decode_windows[-1] == 128


def test_the_decision_fixes_the_window_only_when_the_user_set_it(tiny_dir, monkeypatch):
    from acestep_core.memory import decide
    from acestep_core.memory.policy import DeviceMemory

    cpu = DeviceMemory("cpu", "test CPU", 24 * GB, 20 * GB, False, False)
    auto = decide(cpu, env={})
    assert (auto.vae_chunk_frames, auto.vae_chunk_fixed) == (384, False)
    assert any("the window grows to what the free RAM holds" in r for r in auto.reasons)
    user = decide(cpu, env={"ACESTEP_VAE_DECODE_CHUNK_SIZE": "256"})
    assert (user.vae_chunk_frames, user.vae_chunk_fixed) == (256, True)


def test_a_cancel_inside_a_tile_stops_the_decode_before_the_tile_ends(tiny_dir):
    """One-pass CPU tiles can take a minute: cancel is polled before every decoder block, not only
    between tiles, and the hooks are gone afterwards."""
    from acestep_core.errors import CancelledError
    from acestep_core.pipeline import ACEStepPipeline

    pipe = ACEStepPipeline.from_pretrained(dit=tiny_dir / "acestep-v15-turbo-tiny", vae=tiny_dir / "vae-tiny",
                                           text_encoder=tiny_dir / "Qwen3-Embedding-tiny", dtype="float32")
    latents = torch.randn(1, 40, 64, generator=torch.Generator().manual_seed(0))
    polls: list[int] = []

    def cancel_on_third_poll() -> bool:
        polls.append(1)
        return len(polls) == 3

    decoder = pipe.vae.decoder
    hooks_before = sum(len(m._forward_pre_hooks) for m in decoder.modules())  # weight norm's own
    tiles: list[int] = []
    with pytest.raises(CancelledError, match="VAE decode cancelled"):
        pipe.decode(latents, progress=lambda done, total: tiles.append(done), cancel=cancel_on_third_poll)
    assert len(polls) == 3 and tiles == []  # stopped inside the first (and only) tile
    assert sum(len(m._forward_pre_hooks) for m in decoder.modules()) == hooks_before
    polls.clear()
    assert pipe.decode(latents, cancel=lambda: False).shape == (1, 2, 40 * 1920)
