"""The speed-ups change no number (docs/performance.md): the DiT's contiguous residual stream,
the condition's projections computed once per denoising loop, the VAE's channels-last convolutions
and in-place Snakes."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.autoencoders.autoencoder_oobleck import Snake1d
from torch import nn

from acestep_core.dit import load_dit
from acestep_core.dit_speed import cross_kv_cached
from acestep_core.vae import load_vae, vae_decode
from acestep_core.vae_layout import ChannelsLastConv1d, channels_last_convs
from acestep_core.vae_snake import InPlaceSnake1d, in_place_snakes


def tiny_inputs(dit, frames=13, tokens=9, seed=0):
    gen = torch.Generator().manual_seed(seed)
    width = dit.transformer.condition_embedder.in_features
    return dict(hidden_states=torch.randn(2, frames, 64, generator=gen),
                context_latents=torch.randn(2, frames, 128, generator=gen),
                encoder_hidden_states=torch.randn(2, tokens, width, generator=gen),
                timestep=torch.full((2,), 0.7), timestep_r=torch.full((2,), 0.7))


def test_every_dit_linear_gets_a_contiguous_input(tiny_dir):
    dit = load_dit(tiny_dir / "acestep-v15-turbo-tiny")
    seen = []
    for layer in dit.transformer.layers:
        for linear in (layer.self_attn.to_q, layer.cross_attn.to_q, layer.mlp.gate_proj, layer.mlp.down_proj):
            linear.register_forward_pre_hook(lambda _m, args: seen.append(args[0].is_contiguous()))
    with torch.inference_mode():
        dit.transformer(**tiny_inputs(dit))
    assert seen and all(seen)


def test_cached_condition_projections_give_the_same_steps_and_run_once(tiny_dir):
    dit = load_dit(tiny_dir / "acestep-v15-turbo-tiny")
    transformer = dit.transformer
    inputs = tiny_inputs(dit)
    other = tiny_inputs(dit, seed=1)["encoder_hidden_states"]
    with torch.inference_mode():
        plain = [transformer(**inputs).sample, transformer(**dict(inputs, encoder_hidden_states=other)).sample]
    calls = []
    to_k = transformer.layers[0].cross_attn.to_k
    handle = to_k.register_forward_hook(lambda *_: calls.append(1))
    with torch.inference_mode(), cross_kv_cached(transformer):
        assert not isinstance(transformer.layers[0].cross_attn.to_k, nn.Linear)  # wrapped inside the block
        cached = [transformer(**inputs).sample for _ in range(3)]
        switched = transformer(**dict(inputs, encoder_hidden_states=other)).sample
    handle.remove()
    assert len(calls) == 2  # once per condition tensor, not once per step
    for out in cached:
        assert torch.equal(out, plain[0])
    assert torch.equal(switched, plain[1])
    assert transformer.layers[0].cross_attn.to_k is to_k  # restored after the block
    assert transformer.condition_embedder.__class__ is nn.Linear


def test_an_in_place_change_of_the_condition_is_not_served_from_the_cache(tiny_dir):
    dit = load_dit(tiny_dir / "acestep-v15-turbo-tiny")
    inputs = tiny_inputs(dit)
    condition = inputs["encoder_hidden_states"]
    with torch.inference_mode(), cross_kv_cached(dit.transformer):
        first = dit.transformer(**inputs).sample
        condition.mul_(0.5)  # same tensor object, new values
        second = dit.transformer(**inputs).sample
    with torch.inference_mode():
        expected = dit.transformer(**inputs).sample
    assert not torch.equal(first, second)
    assert torch.equal(second, expected)


def test_channels_last_vae_decodes_and_encodes_the_same_audio(tiny_dir):
    plain = load_vae(tiny_dir / "vae-tiny")
    assert not any(isinstance(m, ChannelsLastConv1d) for m in plain.modules())  # float32: official kernels
    fast = load_vae(tiny_dir / "vae-tiny")
    converted = channels_last_convs(fast)
    convs = sum(type(m) in (nn.Conv1d, nn.ConvTranspose1d) for m in fast.modules())
    assert converted == convs == sum(isinstance(m, ChannelsLastConv1d) for m in fast.modules()) > 0  # every one wrapped
    latents = torch.randn(1, 21, 64, generator=torch.Generator().manual_seed(3)) * 0.5
    ref, got = vae_decode(plain, latents), vae_decode(fast, latents)
    assert got.shape == ref.shape and got.is_contiguous()
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)  # the same products, summed in another order
    audio = ref[:, :, : 8 * 1920]
    with torch.inference_mode():
        torch.testing.assert_close(fast.encode(audio).latent_dist.mean, plain.encode(audio).latent_dist.mean,
                                   atol=1e-5, rtol=0)
    assert any(isinstance(m, ChannelsLastConv1d) for m in load_vae(tiny_dir / "vae-tiny", dtype=torch.bfloat16).modules())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("logscale", [True, False])
def test_in_place_snake_is_bit_for_bit_diffusers(dtype, channels_last, logscale):
    gen = torch.Generator().manual_seed(5)
    snake = Snake1d(6, logscale=logscale)
    with torch.no_grad():
        snake.alpha.copy_(torch.randn(1, 6, 1, generator=gen) * 0.5 + (0 if logscale else 1))
        snake.beta.copy_(torch.randn(1, 6, 1, generator=gen) * 0.5 + (0 if logscale else 1))
    snake = snake.to(dtype)
    x = torch.randn(2, 37, 6, generator=gen).to(dtype).transpose(1, 2) if channels_last \
        else torch.randn(2, 6, 37, generator=gen).to(dtype)
    with torch.inference_mode():
        ref = snake(x)
        assert in_place_snakes(snake) == 1 and isinstance(snake, InPlaceSnake1d)
        got = snake(x)
    assert torch.equal(got, ref) and got.stride() == ref.stride()
    x_before = x.clone()
    with torch.inference_mode():
        snake(x)
    assert torch.equal(x, x_before)  # the input is left alone


def test_in_place_snake_keeps_autograd_working():
    snake = Snake1d(4)
    in_place_snakes(snake)
    x = torch.randn(1, 4, 9, requires_grad=True)
    snake(x).sum().backward()  # in-place ops on a tensor autograd saved would raise here
    ref = Snake1d(4)
    x2 = x.detach().clone().requires_grad_(True)
    ref(x2).sum().backward()
    assert torch.equal(x.grad, x2.grad)


def test_loaded_vae_has_only_in_place_snakes_and_decodes_the_official_numbers(tiny_dir):
    vae = load_vae(tiny_dir / "vae-tiny")
    kinds = [type(m) for m in vae.modules() if isinstance(m, Snake1d)]
    assert kinds and all(kind is InPlaceSnake1d for kind in kinds)
    latents = torch.randn(1, 21, 64, generator=torch.Generator().manual_seed(3)) * 0.5
    got = vae_decode(vae, latents)
    for module in vae.modules():
        if isinstance(module, InPlaceSnake1d):
            module.__class__ = Snake1d
    assert torch.equal(got, vae_decode(vae, latents))  # float32: the same bits as diffusers' Snakes
