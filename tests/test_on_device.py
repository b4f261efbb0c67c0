"""The engine on an accelerator: the official goldens, the fast path's bounds and the compiled LM step.

Every other test runs on the CPU. These run the same checks on a device: where `ACESTEP_TEST_DEVICE`
names one (`cuda`, `cuda:1`, `mps`, `xpu`; `cpu` checks this module itself), else on a CUDA GPU when
torch sees one; without either they skip.

    ACESTEP_TEST_DEVICE=cuda python -m pytest -q tests/test_on_device.py

- float32 on the device matches the float32 goldens within 10x the CPU tolerance (matrix products
  and convolutions in true float32: TF32 is turned off for these tests, as the official float32 runs
  have it);
- bfloat16, what `auto` runs on a GPU and the official code runs there, stays within the CPU bf16
  bounds of `test_bf16_fidelity.py` (generation, VAE decode, the LM's greedy codes);
- sampled thinking (top-p, CFG, the seeded device generator) is repeatable and well formed;
- the LM's fixed-shape step under `torch.compile` (CUDA graphs on CUDA) gives the eager step's codes.
"""

from __future__ import annotations

import functools
import os

import pytest
import torch

from conftest import TINY_DIR, load_golden
from engine_helpers import GENERATION_CASES, request_for_case
from test_bf16_fidelity import (GENERATION_BOUNDS, VAE_DECODE_BOUND, assert_greedy_codes_within_bf16_resolution,
                                rel_rms)

from acestep_core.lm import LMPlanner, LMSampling
from acestep_core.lm.decoder import StaticCacheDecoder
from acestep_core.lm.generation import decode_codes
from acestep_core.vae import load_vae, vae_decode

LATENT_TOL = 1e-3  # 10x the float32 CPU tolerance of test_engine_goldens.py (other kernels, same arithmetic)
AUDIO_TOL = 2e-2   # likewise 10x


def _test_device() -> torch.device | None:
    name = os.environ.get("ACESTEP_TEST_DEVICE", "").strip()
    if name:
        from acestep_core.pipeline import resolve_device

        return resolve_device(name)  # a device that is not there is a clear error, not a skip
    return torch.device("cuda") if torch.cuda.is_available() else None


DEVICE = _test_device()
pytestmark = pytest.mark.skipif(
    DEVICE is None, reason="no accelerator here: set ACESTEP_TEST_DEVICE=cuda (or mps, xpu; cpu checks "
    "this module) to run the goldens on a device")


@pytest.fixture(autouse=True)
def true_float32():
    """TF32 off (cuDNN convolutions default to it), so float32 means float32; restored afterwards."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


@functools.lru_cache(maxsize=None)
def device_pipeline(model: str, dtype: str):
    from acestep_core.pipeline import ACEStepPipeline

    return ACEStepPipeline.from_pretrained(dit=TINY_DIR / model, vae=TINY_DIR / "vae-tiny",
                                           text_encoder=TINY_DIR / "Qwen3-Embedding-tiny", device=DEVICE,
                                           dtype=dtype)


def on_device(module) -> bool:
    return {p.device.type for p in module.parameters()} == {DEVICE.type}


@pytest.mark.parametrize("name", GENERATION_CASES)
def test_float32_generation_on_the_device_matches_the_golden(manifest, name):
    case, golden = manifest["cases"][name], load_golden(name)
    pipe = device_pipeline(case["model"], "float32")
    assert all(on_device(m) for m in (pipe.dit.transformer, pipe.dit.condition_encoder, pipe.vae))
    result = pipe.generate(request_for_case(case, golden), latents=golden["in.noise"])
    assert result.latents.shape == golden["out.pred_latents"].shape
    error = (result.latents.cpu() - golden["out.pred_latents"]).abs().max().item()
    assert error <= LATENT_TOL, f"{name}: max abs error {error:.2e} on {DEVICE}"
    # the audio comes back to the CPU in float32, whatever the device
    assert result.audio.device.type == "cpu" and result.audio.dtype == torch.float32
    expected = golden["out.audio"] if "out.audio" in golden else None
    if expected is not None:
        assert (result.audio - expected).abs().max().item() <= AUDIO_TOL


@pytest.mark.parametrize("name", list(GENERATION_BOUNDS))
def test_bf16_generation_on_the_device_stays_within_the_cpu_bounds(manifest, name):
    case, golden = manifest["cases"][name], load_golden(name)
    pipe = device_pipeline(case["model"], "bfloat16")
    assert {p.dtype for p in pipe.dit.transformer.parameters()} == {torch.bfloat16}
    result = pipe.generate(request_for_case(case, golden), latents=golden["in.noise"])
    bound, _measured = GENERATION_BOUNDS[name]
    error = rel_rms(result.latents.cpu(), golden["out.pred_latents"])
    assert error <= bound, f"{name}: relative RMS {error:.4f} > {bound} on {DEVICE}"
    assert torch.isfinite(result.audio).all()


def test_bf16_vae_decode_on_the_device_stays_within_the_cpu_bound():
    golden = load_golden("component_vae")
    vae = load_vae(TINY_DIR / "vae-tiny", device=DEVICE, dtype=torch.bfloat16)
    assert on_device(vae)
    audio = vae_decode(vae, golden["out.posterior_mean"].transpose(1, 2).to(DEVICE))
    assert audio.device.type == "cpu" and audio.dtype == torch.float32
    assert rel_rms(audio, golden["out.decoded_from_mean"]) <= VAE_DECODE_BOUND[0]


@pytest.fixture(scope="module")
def device_planner():
    return LMPlanner.from_pretrained(TINY_DIR / "acestep-5Hz-lm-tiny", device=DEVICE, dtype="bfloat16")


@pytest.mark.parametrize("name", ["lm_user_metas_codes", "lm_cot_nocaption_codes_cfg"])
def test_bf16_lm_greedy_codes_on_the_device_differ_only_below_the_bf16_resolution(device_planner, manifest, name):
    assert on_device(device_planner.model)
    assert_greedy_codes_within_bf16_resolution(device_planner, manifest, name)


def test_sampled_thinking_on_the_device_is_repeatable_and_well_formed(device_planner):
    """The sampled path (top-p, CFG, the seeded device generator) end to end: a plan of 4 s."""
    def think():
        return device_planner.think("calm piano", "[Instrumental]", duration=4, bpm=90, use_cot_caption=False,
                                    sampling=LMSampling(temperature=0.85, top_p=0.9, cfg_scale=2.0, seed=11))
    first, again = think(), think()
    assert len(first.audio_codes) == 20 and all(0 <= c < 64000 for c in first.audio_codes)
    assert first.audio_codes == again.audio_codes and first.cot_text == again.cot_text
    assert first.bpm == 90 and first.audio_duration == 4


ROWS = [[151644, 8948, 198, 2, 17, 40, 151645, 198, 151644, 872], [151644, 8948, 198, 5, 151645, 198]]


@pytest.mark.skipif(DEVICE is not None and DEVICE.type == "cpu" and os.environ.get("ACESTEP_TEST_COMPILE") != "1",
                    reason="on the CPU the compiled step is test_lm_decoder.py's (ACESTEP_TEST_COMPILE=1)")
def test_compiled_lm_step_gives_the_eager_codes_on_the_device():
    # float32: the eager step attends over the filled cache, the fixed-shape one over all of it under
    # a mask; in bfloat16 that alone can swap a near-tie of the tiny LM
    model = LMPlanner.from_pretrained(TINY_DIR / "acestep-5Hz-lm-tiny", device=DEVICE, dtype="float32").model
    sampling = LMSampling(temperature=0.0, cfg_scale=2.0, top_p=1.0)
    eager = decode_codes(StaticCacheDecoder(model, compile=False), ROWS, 12, sampling, None, 2.0)
    compiled_decoder = StaticCacheDecoder(model, compile=True)
    first = decode_codes(compiled_decoder, ROWS, 12, sampling, None, 2.0)
    again = decode_codes(compiled_decoder, ROWS, 12, sampling, None, 2.0)  # replays the captured graph
    assert first.generated_ids == eager.generated_ids == again.generated_ids
    assert len(eager.generated_ids) == 13  # 12 codes and EOS
