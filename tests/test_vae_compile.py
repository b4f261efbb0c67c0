"""`ACESTEP_VAE_COMPILE=1`: the VAE decoder under torch.compile, and its eager fallback."""

from __future__ import annotations

import logging
import os

import pytest
import torch

from acestep_core import vae_compile
from acestep_core.errors import InputError
from acestep_core.vae import load_vae, vae_decode

LATENTS = torch.randn(1, 21, 64, generator=torch.Generator().manual_seed(3)) * 0.5


def fake_compile(behaviour):
    """A stand-in for torch.compile whose compiled function runs `behaviour` and counts its calls."""
    calls = []

    def compile(fn, **kwargs):
        assert kwargs.get("dynamic") is True  # one graph for every tile length

        def compiled(*args, **kw):
            calls.append(1)
            return behaviour(fn, *args, **kw)
        return compiled
    return compile, calls


def test_flag_routes_the_decoder_through_the_compiled_function(tiny_dir, monkeypatch):
    compile, calls = fake_compile(lambda fn, *a, **k: fn(*a, **k))
    monkeypatch.setattr(vae_compile.torch, "compile", compile)
    eager = vae_decode(load_vae(tiny_dir / "vae-tiny"), LATENTS)
    monkeypatch.setenv("ACESTEP_VAE_COMPILE", "1")
    vae = load_vae(tiny_dir / "vae-tiny")
    assert torch.equal(vae_decode(vae, LATENTS), eager) and calls
    monkeypatch.setenv("ACESTEP_VAE_COMPILE", "0")
    calls.clear()
    vae_decode(load_vae(tiny_dir / "vae-tiny"), LATENTS)
    assert not calls


def test_a_failing_compile_falls_back_to_eager_once_and_for_all(tiny_dir, monkeypatch, caplog):
    def broken(fn, *a, **k):
        raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\nmore detail")
    compile, calls = fake_compile(broken)
    monkeypatch.setattr(vae_compile.torch, "compile", compile)
    eager = vae_decode(load_vae(tiny_dir / "vae-tiny"), LATENTS)
    monkeypatch.setenv("ACESTEP_VAE_COMPILE", "1")
    vae = load_vae(tiny_dir / "vae-tiny")
    with caplog.at_level(logging.WARNING, logger="acestep_core.vae"):
        first = vae_decode(vae, LATENTS)
        second = vae_decode(vae, LATENTS)
    assert torch.equal(first, eager) and torch.equal(second, eager)
    assert len(calls) == 1  # not retried on every tile
    assert "torch.compile failed (RuntimeError: InvalidCxxCompiler: No working C++ compiler found)" in caplog.text


def test_out_of_memory_in_the_compiled_decoder_reaches_the_decode_fallbacks(tiny_dir, monkeypatch):
    def oom(fn, *a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory")
    compile, _ = fake_compile(oom)
    monkeypatch.setattr(vae_compile.torch, "compile", compile)
    monkeypatch.setenv("ACESTEP_VAE_COMPILE", "1")
    with pytest.raises(torch.OutOfMemoryError):
        vae_decode(load_vae(tiny_dir / "vae-tiny"), LATENTS)


def test_an_unknown_flag_value_is_a_clear_error(tiny_dir, monkeypatch):
    monkeypatch.setenv("ACESTEP_VAE_COMPILE", "sometimes")
    with pytest.raises(InputError, match="ACESTEP_VAE_COMPILE='sometimes' is not understood: set 1"):
        load_vae(tiny_dir / "vae-tiny")


@pytest.mark.skipif(os.environ.get("ACESTEP_TEST_COMPILE") != "1", reason="set ACESTEP_TEST_COMPILE=1 (slow compile)")
def test_compiled_decoder_decodes_what_the_eager_one_does(tiny_dir, monkeypatch):
    eager = vae_decode(load_vae(tiny_dir / "vae-tiny"), LATENTS)
    monkeypatch.setenv("ACESTEP_VAE_COMPILE", "1")
    vae = load_vae(tiny_dir / "vae-tiny")
    got = vae_decode(vae, LATENTS, chunk_frames=16, overlap_frames=2)  # several tile lengths, one graph
    ref = vae_decode(load_vae(tiny_dir / "vae-tiny"), LATENTS, chunk_frames=16, overlap_frames=2)
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(vae_decode(vae, LATENTS), eager, atol=1e-4, rtol=1e-4)
