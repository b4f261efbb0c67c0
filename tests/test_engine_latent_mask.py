"""With ACESTEP_MASK_PADDED_FRAMES=1 padded latent frames are hidden from the DiT: an item's own frames
do not depend on its padding (short code strings, short durations) nor on the other items of a
mixed-length batch. By default the official behaviour holds: the DiT sees the padding."""

import pytest
import torch

from engine_helpers import tiny_pipeline

from acestep_core import GenerationRequest
from acestep_core.codes import codes_per_item
from acestep_core.errors import InputError
from acestep_core.latent_mask import dit_forward, frame_mask

SAME = 1e-5


@pytest.fixture(autouse=True)
def masking_on(monkeypatch):
    monkeypatch.setenv("ACESTEP_MASK_PADDED_FRAMES", "1")


def test_padding_is_visible_by_default_as_in_the_official_dit(monkeypatch):
    monkeypatch.delenv("ACESTEP_MASK_PADDED_FRAMES")
    pipe = tiny_pipeline()
    assert pipe.mask_padded_frames is None  # follows the environment
    request = _request(_codes(CODES_B))
    noise = _noise((1, 128, 64), 1)
    first = pipe.generate(request, latents=noise)
    second = pipe.generate(request, latents=_with_other_padding(noise, 100))
    assert (first.latents[:, :100] - second.latents[:, :100]).abs().max().item() > 1e-3
CODES_A = [(i * 7919) % 64000 for i in range(30)]  # 150 frames
CODES_B = [(i * 104729 + 11) % 64000 for i in range(20)]  # 100 frames: padded to 128


def _codes(codes):
    return "".join(f"<|audio_code_{c}|>" for c in codes)


def _request(codes, batch=1, **kw):
    kw.setdefault("seed", [7, 8][:batch])
    return GenerationRequest(caption="short test", lyrics="[Instrumental]", audio_code_string=codes,
                             batch_size=batch, inference_steps=kw.pop("steps", 8), **kw)


def _noise(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _with_other_padding(noise, own):
    other = noise.clone()
    other[:, own:] = _noise(other[:, own:].shape, 99)
    return other


@pytest.mark.parametrize("model,guidance", [("acestep-v15-turbo-tiny", 1.0), ("acestep-v15-base-tiny", 5.0),
                                            ("acestep-v15-xl-turbo-tiny", 1.0)])
def test_short_codes_do_not_depend_on_their_padding(model, guidance):
    pipe = tiny_pipeline(model)
    request = _request(_codes(CODES_B), guidance_scale=guidance, steps=8 if guidance == 1.0 else 4)
    noise = _noise((1, 128, 64), 1)
    first = pipe.generate(request, latents=noise)
    second = pipe.generate(request, latents=_with_other_padding(noise, 100))
    assert first.params["latent_frames"] == 128 and first.params["valid_frames"] == [100]
    assert (first.latents[:, :100] - second.latents[:, :100]).abs().max().item() <= SAME
    assert torch.isfinite(first.latents).all()
    # Without the mask the padding leaks into the item's own frames.
    pipe.mask_padded_frames = False
    try:
        leaky = pipe.generate(request, latents=_with_other_padding(noise, 100))
    finally:
        pipe.mask_padded_frames = None
    assert (first.latents[:, :100] - leaky.latents[:, :100]).abs().max().item() > 1e-3


def test_short_codes_are_padded_with_the_head_of_the_silence_latent():
    """The reference pads short hints with silence_latent[:, :pad], not with the frames after them."""
    pipe = tiny_pipeline()
    inputs = pipe._prepare_task(_request(_codes(CODES_B)), [CODES_B], [7])
    silence = pipe.dit.silence_latent
    assert inputs.frames == 128 and inputs.valid_frames == [100]
    assert torch.equal(inputs.src_latents[0, 100:], silence[0, :28])


def test_short_text2music_duration_masks_its_padding():
    pipe = tiny_pipeline()
    request = GenerationRequest(caption="x", audio_duration=3.0, inference_steps=8, seed=3)
    noise = _noise((1, 128, 64), 2)
    first = pipe.generate(request, latents=noise)
    second = pipe.generate(request, latents=_with_other_padding(noise, 75))
    assert first.params["valid_frames"] == [75]
    assert (first.latents[:, :75] - second.latents[:, :75]).abs().max().item() <= SAME


@pytest.mark.parametrize("model,guidance", [("acestep-v15-turbo-tiny", 1.0), ("acestep-v15-base-tiny", 4.0)])
def test_mixed_length_batch_items_equal_their_solo_runs(model, guidance):
    pipe = tiny_pipeline(model)
    steps = 8 if guidance == 1.0 else 4
    noise = _noise((2, 150, 64), 5)
    batch = pipe.generate(_request([_codes(CODES_A), _codes(CODES_B)], batch=2, guidance_scale=guidance, steps=steps),
                          latents=noise)
    assert batch.latents.shape == (2, 150, 64) and batch.params["valid_frames"] == [150, 100]
    assert batch.params["audio_code_string"] == [_codes(CODES_A), _codes(CODES_B)]
    long_alone = pipe.generate(_request(_codes(CODES_A), seed=7, guidance_scale=guidance, steps=steps),
                               latents=noise[:1])
    short_alone = pipe.generate(_request(_codes(CODES_B), seed=8, guidance_scale=guidance, steps=steps),
                                latents=noise[1:, :128])
    assert (batch.latents[0] - long_alone.latents[0]).abs().max().item() <= SAME
    assert (batch.latents[1, :100] - short_alone.latents[0, :100]).abs().max().item() <= SAME


def test_odd_length_item_sees_the_zero_patch_padding_it_would_see_alone():
    """The DiT pairs frames into patches; an odd item's last patch must hold zeros, as when it runs alone."""
    transformer = tiny_pipeline().dit.transformer
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(2, 128, 64, generator=generator)
    context = torch.randn(2, 128, 128, generator=generator)
    encoder = torch.randn(2, 9, 32, generator=generator)
    t = torch.tensor([0.7, 0.7])
    valid = frame_mask([101, 128], 128)
    with torch.no_grad():
        together = dit_forward(transformer, valid, x, context, timestep=t, timestep_r=t, encoder_hidden_states=encoder)
        alone = dit_forward(transformer, None, x[:1, :101], context[:1, :101], timestep=t[:1], timestep_r=t[:1],
                            encoder_hidden_states=encoder[:1])
        full = dit_forward(transformer, None, x[1:], context[1:], timestep=t[1:], timestep_r=t[1:],
                           encoder_hidden_states=encoder[1:])
    assert (together[0, :101] - alone[0]).abs().max().item() <= SAME
    assert (together[1] - full[0]).abs().max().item() <= SAME
    assert frame_mask([128, 128], 128) is None


def test_per_item_code_lists_are_checked():
    assert codes_per_item([_codes([1, 2])], 3) == [[1, 2]] * 3
    assert codes_per_item([1, 2], 2) == [[1, 2], [1, 2]]
    with pytest.raises(InputError, match="one per batch item"):
        codes_per_item([_codes([1]), _codes([2])], 3)
    with pytest.raises(InputError, match="every batch item or for none"):
        codes_per_item([_codes([1]), ""], 2)
