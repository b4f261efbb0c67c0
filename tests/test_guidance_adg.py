"""Angle-based dynamic guidance (use_adg): the official formula on hand-checked values, and the switch
through the sampler, the CLI and the request."""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import TINY_DIR
from engine_helpers import tiny_pipeline

from acestep_core import GenerationRequest
from acestep_core.cli import main
from acestep_core.errors import InputError
from acestep_core.guidance import ADG_ANGLE_CLIP, adg


def test_adg_rotates_the_clean_estimate_by_the_clipped_angle():
    """x = 0, t = 1: x0 = -v. x0_cond = (1, 0) and x0_uncond = (0, 1) are 90 degrees apart; scale 1.5
    asks for 0.501 x 90 degrees, clipped to 3.14 / 6; the orthogonal part (1, 0) is added by sin."""
    x = torch.zeros(1, 1, 2)
    v_cond, v_uncond = torch.tensor([[[-1.0, 0.0]]]), torch.tensor([[[0.0, -1.0]]])
    out = adg(x, v_cond, v_uncond, torch.tensor(1.0), guidance_scale=1.5)
    expected = -(math.cos(ADG_ANGLE_CLIP) + math.sin(ADG_ANGLE_CLIP))
    assert ADG_ANGLE_CLIP == 3.14 / 6
    assert torch.allclose(out, torch.tensor([[[expected, 0.0]]]), atol=1e-6)


def test_a_small_angle_is_scaled_not_clipped():
    """x0_cond = (1, 0.1), x0_uncond = (1, 0): theta = atan(0.1); scale 2 turns by w = 1.001 times it."""
    x = torch.zeros(1, 1, 2)
    out = adg(x, -torch.tensor([[[1.0, 0.1]]]), -torch.tensor([[[1.0, 0.0]]]), 1.0, guidance_scale=2.0)
    theta = math.atan(0.1)
    turned = 1.001 * theta
    perp = torch.tensor([0.0, 0.1])
    x0 = math.cos(turned) * torch.tensor([1.0, 0.1]) + perp * math.sin(turned) / math.sin(theta)
    assert torch.allclose(out[0, 0], -x0, atol=1e-6)


def test_identical_predictions_only_feel_the_angle_floor():
    """No angle between the estimates: the official clamp still measures acos(1 - 1e-6), so the clean
    estimate shrinks by cos(w * that) and nothing is added (no orthogonal part)."""
    torch.manual_seed(0)
    x, v = torch.randn(2, 7, 64, dtype=torch.float64), torch.randn(2, 7, 64, dtype=torch.float64)
    t = 0.6
    out = adg(x, v, v.clone(), torch.tensor(t, dtype=torch.float64), guidance_scale=7.0)
    shrink = math.cos(6.001 * math.acos(1 - 1e-6))
    assert torch.allclose(out, (x - shrink * (x - t * v)) / t, atol=1e-9)
    assert torch.allclose(out, v, atol=1e-3)


def test_bfloat16_in_bfloat16_out():
    torch.manual_seed(1)
    x, c, u = (torch.randn(1, 5, 64, dtype=torch.bfloat16) for _ in range(3))
    out = adg(x, c, u, torch.tensor(0.5, dtype=torch.bfloat16), guidance_scale=5.0)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()


def test_base_model_runs_adg_instead_of_apg():
    pipe = tiny_pipeline("acestep-v15-base-tiny")
    common = dict(caption="x", audio_duration=5.12, inference_steps=3, guidance_scale=4.0, seed=5)
    apg_run = pipe.generate(GenerationRequest(**common))
    adg_run = pipe.generate(GenerationRequest(**common, use_adg=True))
    again = pipe.generate(GenerationRequest(**common, use_adg=True))
    assert torch.isfinite(adg_run.latents).all() and not torch.allclose(adg_run.latents, apg_run.latents)
    assert torch.equal(adg_run.latents, again.latents)
    assert adg_run.params["use_adg"] is True and apg_run.params["use_adg"] is False
    unguided = pipe.generate(GenerationRequest(**dict(common, guidance_scale=1.0), use_adg=True))
    plain = pipe.generate(GenerationRequest(**dict(common, guidance_scale=1.0)))
    assert torch.equal(unguided.latents, plain.latents)  # no guidance, nothing for ADG to change


def test_turbo_says_it_ran_without_adg():
    result = tiny_pipeline().generate(GenerationRequest(caption="x", audio_duration=5.12, seed=1, use_adg=True))
    assert any("use_adg was not used" in note for note in result.notices)


def test_use_adg_must_be_a_boolean():
    with pytest.raises(InputError, match="use_adg must be true or false, got 'yes please'"):
        GenerationRequest(caption="x", use_adg="yes please").validate()


def test_cli_use_adg_flag(tmp_path, monkeypatch):
    monkeypatch.setenv("ACESTEP_TINY_DIR", str(TINY_DIR))
    out = tmp_path / "out"
    code = main(["generate", "--tiny", "--device", "cpu", "--out", str(out), "--caption", "x", "--audio-duration", "10",
                 "--dit", str(TINY_DIR / "acestep-v15-base-tiny"), "--inference-steps", "2", "--guidance-scale", "3",
                 "--use-adg", "true"])
    assert code == 0
    params = json.loads(next(out.glob("*.json")).read_text())
    assert params["use_adg"] is True and params["model_version"] == "base"
