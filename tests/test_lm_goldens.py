"""Greedy constrained decoding reproduces the reference's token ids (tiny LM, float32 CPU).

Compared up to the first step whose top-2 logit margin in the reference is below 1e-3 (there a
different but correct implementation may pick the other token). The 3500-token CoT of
`lm_cot_and_codes` is compared on its first 700 tokens (past the 512-token caption limit) to keep
the test short; its codes phase is run from the reference's own phase-2 prompt.
"""

import pytest

from acestep_core.lm import LMPlanner, LMSampling, prompts
from acestep_core.lm.generation import decode_codes
from conftest import load_golden

GREEDY = dict(temperature=0.0, top_k=0, top_p=1.0, repetition_penalty=1.0)


@pytest.fixture(scope="module")
def planner(tiny_dir):
    return LMPlanner.from_pretrained(tiny_dir / "acestep-5Hz-lm-tiny", device="cpu", dtype="float32")


def assert_ids_match(got, golden, key, limit=None):
    expected = golden[f"out.{key}_generated_ids"].tolist()
    margins = golden[f"out.{key}_step_top2_margin"].tolist()
    n = next((i for i, m in enumerate(margins) if m < 1e-3), len(margins))
    if limit is not None:
        n = min(n, limit)
    assert n > 0
    assert got[:n] == expected[:n]
    return n


def run_case(planner, manifest, name, **extra):
    kw = manifest["cases"][name]["kwargs"]
    sampling = LMSampling(cfg_scale=kw["cfg_scale"], **GREEDY)
    extra.setdefault("infer_type", kw["infer_type"])
    return planner.generate_with_stop_condition(
        kw["caption"], kw["lyrics"], sampling=sampling,
        user_metadata=kw["user_metadata"], target_duration=kw["target_duration"],
        use_cot_metas=kw["use_cot_metas"], use_cot_caption=kw["use_cot_caption"],
        use_cot_language=kw["use_cot_language"], max_duration=600, **extra,
    )


@pytest.mark.parametrize("name", ["lm_cot_nocaption_codes_cfg", "lm_user_metas_codes", "lm_cot_partial_user_metas"])
def test_two_phase_generation_is_token_exact(planner, manifest, name):
    golden = load_golden(name)
    out = run_case(planner, manifest, name)
    case = manifest["cases"][name]
    assert len(out.phases) == len(case["phases"])
    for i, phase in enumerate(out.phases):
        assert phase.prompt_ids == golden[f"in.phase{i}_prompt_ids"][0].tolist()
        n = assert_ids_match(phase.generated_ids, golden, f"phase{i}")
        assert n == len(phase.generated_ids)  # the whole phase, ending on <|im_end|>
        assert phase.generated_ids[-1] == 151645
    assert out.metadata == case["metadata"]
    _, codes = prompts.parse_lm_output(case["audio_codes"])
    assert out.audio_codes == codes and len(codes) == case["num_codes"]


def test_cfg_batch_is_left_padded_like_the_reference(planner, manifest):
    golden = load_golden("lm_cot_nocaption_codes_cfg")
    out = run_case(planner, manifest, "lm_cot_nocaption_codes_cfg")
    ids, mask = golden["in.phase1_cfg_batch_ids"], golden["in.phase1_cfg_batch_attention_mask"]
    assert out.phases[1].uncond_prompt_ids == ids[1][mask[1].bool()].tolist()


def test_cot_with_free_caption_is_token_exact(planner, manifest):
    golden = load_golden("lm_cot_and_codes")
    out = run_case(planner, manifest, "lm_cot_and_codes", infer_type="dit", cot_max_new_tokens=700)
    phase = out.phases[0]
    assert phase.prompt_ids == golden["in.phase0_prompt_ids"][0].tolist()
    assert assert_ids_match(phase.generated_ids, golden, "phase0", limit=700) == 700
    assert out.metadata["bpm"] == manifest["cases"]["lm_cot_and_codes"]["metadata"]["bpm"]


def test_codes_phase_after_free_caption_is_token_exact(planner, manifest):
    golden = load_golden("lm_cot_and_codes")
    prompt = golden["in.phase1_prompt_ids"][0].tolist()
    result = decode_codes(planner.decoder, [prompt], 30, LMSampling(cfg_scale=1.0, **GREEDY), None)
    assert assert_ids_match(result.generated_ids, golden, "phase1") == 31
    assert len(result.generated_ids) == 31 and result.generated_ids[-1] == 151645


@pytest.mark.parametrize("name", ["lm_format_sample", "lm_create_sample"])
def test_format_and_sample_decoding_prefix(planner, manifest, name):
    golden = load_golden(name)
    case = manifest["cases"][name]
    kw = case["kwargs"]
    if name == "lm_format_sample":
        text, user, skip_language = case["prompt_text"], {"bpm": 110}, False
    else:
        text, user, skip_language = case["prompt_text"], {"language": kw["vocal_language"]}, False
    phase = planner.run_understand_phase(text, LMSampling(cfg_scale=1.0, **GREEDY), user_metadata=user,
                                         skip_language=skip_language, max_new_tokens=300)
    assert phase.prompt_ids == golden["in.prompt_ids"][0].tolist()
    expected = golden["out.generated_ids"].tolist()
    margins = golden["out.step_top2_margin"].tolist()
    n = min(300, next((i for i, m in enumerate(margins) if m < 1e-3), len(margins)))
    assert n > 10 and phase.generated_ids[:n] == expected[:n]
