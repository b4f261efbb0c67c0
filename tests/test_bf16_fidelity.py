"""The bfloat16 fast path against the float32 goldens (docs/memory.md#dtypes).

`auto` runs bfloat16 on CPUs with native bf16 and on GPUs; these tests bound how far that lands from
the official float32 results. Errors are relative RMS (`‖got − ref‖ / ‖ref‖`) unless named otherwise;
each bound is about 1.5-2 times what was measured on the tiny checkpoints (the measured figure is beside it),
so a real regression (a stage silently left in the wrong dtype, a float32-only step done in bf16) fails.
The measured figures were taken again with the speed layouts in place (contiguous DiT residual stream,
condition cache, channels-last bf16 VAE; docs/performance.md) and did not move.
"""

from __future__ import annotations

import functools

import pytest
import torch

from conftest import TINY_DIR, load_golden
from engine_helpers import request_for_case

from acestep_core.codes import latents_to_codes
from acestep_core.lm import LMPlanner, LMSampling
from acestep_core.vae import load_vae, vae_decode

BF16 = torch.bfloat16

# case: (bound on the final latents, measured)
GENERATION_BOUNDS = {
    "t2m_turbo": (0.10, 0.050),
    "t2m_base_apg": (0.16, 0.081),  # 32 steps with APG: the longest chain of bf16 DiT passes
    "repaint_explicit_balanced": (0.08, 0.042),
    "cover_audio_turbo": (0.07, 0.035),
}
VAE_DECODE_BOUND = (0.02, 0.0100)  # decoded waveform (max abs 0.028 measured)
FSQ_MISMATCH_BOUND = (0.25, 0.148)  # fraction of FSQ indices that differ (4 of 27 measured)
QUANTIZED_BOUND = (0.005, 0.0017)  # FSQ vectors where the index agrees
BF16_EPS = 2.0**-8  # bfloat16 has 8 significant bits: values are known to a relative 2^-8


def rel_rms(got: torch.Tensor, ref: torch.Tensor) -> float:
    got, ref = got.double(), ref.double()
    return ((got - ref).norm() / ref.norm()).item()


@functools.lru_cache(maxsize=None)
def bf16_pipeline(model: str):
    from acestep_core.pipeline import ACEStepPipeline

    return ACEStepPipeline.from_pretrained(dit=TINY_DIR / model, vae=TINY_DIR / "vae-tiny",
                                           text_encoder=TINY_DIR / "Qwen3-Embedding-tiny", dtype="bfloat16")


@pytest.mark.parametrize("name", list(GENERATION_BOUNDS))
def test_generation_in_bf16_stays_close_to_the_float32_golden(manifest, name):
    case, golden = manifest["cases"][name], load_golden(name)
    pipe = bf16_pipeline(case["model"])
    # every stage holds bf16 weights: text encoder, condition encoder, DiT, VAE
    for module in (pipe.text_encoder.model, pipe.dit.condition_encoder, pipe.dit.transformer, pipe.vae):
        assert {p.dtype for p in module.parameters()} == {BF16}
    result = pipe.generate(request_for_case(case, golden), latents=golden["in.noise"])
    # the time grid is the official bf16 one (built in the model dtype, docs/sampling.md)
    assert result.params["timesteps"] == pytest.approx(golden["mid.timesteps"].tolist(), abs=1e-2)
    bound, _measured = GENERATION_BOUNDS[name]
    error = rel_rms(result.latents, golden["out.pred_latents"])
    assert error <= bound, f"{name}: relative RMS {error:.4f} > {bound}"
    assert result.audio.dtype == torch.float32 and torch.isfinite(result.audio).all()


def test_vae_decode_in_bf16_stays_close_to_the_float32_golden():
    golden = load_golden("component_vae")
    vae = load_vae(TINY_DIR / "vae-tiny", dtype=BF16)
    audio = vae_decode(vae, golden["out.posterior_mean"].transpose(1, 2))
    bound, _measured = VAE_DECODE_BOUND
    assert audio.dtype == torch.float32
    assert rel_rms(audio, golden["out.decoded_from_mean"]) <= bound


def test_fsq_indices_in_bf16_differ_only_rarely():
    golden = load_golden("component_tokenize")
    dit = bf16_pipeline("acestep-v15-turbo-tiny").dit
    quantized, indices = latents_to_codes(dit, golden["in.latents"].to(BF16))
    expected = golden["out.indices"].long()
    assert indices.shape == expected.shape
    mismatch = (indices.long() != expected).float().mean().item()
    bound, _measured = FSQ_MISMATCH_BOUND
    assert mismatch <= bound
    # where the index agrees, the quantized vector is the same FSQ level (rounded in float32)
    same = (indices.long() == expected).squeeze(-1)
    assert rel_rms(quantized[same].float(), golden["out.quantized"][same]) <= QUANTIZED_BOUND[0]


GREEDY = dict(temperature=0.0, top_k=0, top_p=1.0, repetition_penalty=1.0)


@pytest.fixture(scope="module")
def bf16_planner(tiny_dir):
    planner = LMPlanner.from_pretrained(tiny_dir / "acestep-5Hz-lm-tiny", device="cpu", dtype="bfloat16")
    assert {p.dtype for p in planner.model.parameters()} == {BF16}
    return planner


def bf16_resolution(planner, prompt: list[int], generated: list[int], step: int) -> float:
    """How far bf16 rounding can move a logit at `step`: 2^-8 of the largest float32 logit there,
    for each of the two competing logits (so a top-2 swap needs a margin below twice that)."""
    model32 = LMPlanner.from_pretrained(TINY_DIR / "acestep-5Hz-lm-tiny", device="cpu", dtype="float32").model
    ids = torch.tensor([prompt + generated[:step]])
    with torch.inference_mode():
        logits = model32(input_ids=ids).logits[0, -1]
    return 2 * BF16_EPS * logits.abs().max().item()


def assert_greedy_codes_within_bf16_resolution(planner, manifest, name: str) -> None:
    """Greedy decoding of the golden case `name` with `planner`: token-exact, or the first token that
    differs is one whose reference top-2 margin is below the bf16 resolution."""
    golden, kw = load_golden(name), manifest["cases"][name]["kwargs"]
    out = planner.generate_with_stop_condition(
        kw["caption"], kw["lyrics"], sampling=LMSampling(cfg_scale=kw["cfg_scale"], **GREEDY),
        user_metadata=kw["user_metadata"], target_duration=kw["target_duration"],
        use_cot_metas=kw["use_cot_metas"], use_cot_caption=kw["use_cot_caption"],
        use_cot_language=kw["use_cot_language"], max_duration=600, infer_type=kw["infer_type"])
    for i, phase in enumerate(out.phases):
        expected = golden[f"out.phase{i}_generated_ids"].tolist()
        margins = golden[f"out.phase{i}_step_top2_margin"].tolist()
        first = next((k for k, (a, b) in enumerate(zip(phase.generated_ids, expected)) if a != b), None)
        if first is None:
            assert phase.generated_ids == expected
            continue
        # After the first different token the prefixes differ, so only that step can be judged.
        resolution = bf16_resolution(planner, golden[f"in.phase{i}_prompt_ids"][0].tolist(), expected, first)
        assert margins[first] < resolution, (
            f"{name} phase {i} on {planner.device}: token {first} differs although the reference's top-2 "
            f"margin {margins[first]:.4f} is above the bf16 resolution {resolution:.4f}")


# Measured: all three are token-exact in bf16 (smallest reference top-2 margin 0.137; resolution ≈ 0.095).
@pytest.mark.parametrize("name", ["lm_user_metas_codes", "lm_cot_nocaption_codes_cfg", "lm_cot_partial_user_metas"])
def test_lm_greedy_codes_in_bf16_differ_only_below_the_bf16_resolution(bf16_planner, manifest, name):
    assert_greedy_codes_within_bf16_resolution(bf16_planner, manifest, name)
