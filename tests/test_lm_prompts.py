"""LM prompt strings and token ids against the reference goldens (every prompt kind)."""

import pytest

from acestep_core.lm import prompts
from acestep_core.lm.tokenizer import LMTokenizer
from conftest import load_golden

CAPTION = "upbeat electronic dance track with bright synth leads and punchy drums"
LYRICS = "[Verse]\nTiny weights are dancing in the light\n[Chorus]\nFloat thirty-two, we sing all night"


@pytest.fixture(scope="module")
def tokenizer(tiny_dir):
    return LMTokenizer(tiny_dir / "acestep-5Hz-lm-tiny")


def test_every_prompt_kind_is_token_exact(tokenizer, manifest):
    case = manifest["cases"]["lm_prompts"]
    golden = load_golden("lm_prompts")
    cot = prompts.format_metadata_as_cot(case["cot_yaml_example_input"])
    built = {
        "cot": prompts.cot_prompt(CAPTION, LYRICS),
        "cot_uncond": prompts.cot_uncond_prompt(LYRICS),
        "cot_uncond_negative": prompts.cot_uncond_prompt(LYRICS, "harsh noise"),
        "codes_with_cot": prompts.codes_prompt(CAPTION, LYRICS, cot),
        "codes_uncond": prompts.codes_uncond_prompt(CAPTION, LYRICS),
        "format": prompts.format_prompt("Latin pop, reggaeton", "[Verse 1]\nTengo un nudo en la garganta"),
        "inspiration": prompts.inspiration_prompt("a soft love song for a quiet evening", True),
        "understand": prompts.understand_prompt("<|audio_code_5|><|audio_code_63999|><|audio_code_123|>"),
    }
    assert set(built) == set(case["prompts"])
    for name, text in built.items():
        assert text == case["prompts"][name], name
        assert tokenizer.encode(text) == golden[f"in.{name}_ids"].tolist(), name


def test_default_negative_prompt_counts_as_none():
    assert prompts.cot_uncond_prompt(LYRICS, "NO USER INPUT") == prompts.cot_uncond_prompt(LYRICS)
    assert "# Caption\nharsh" in prompts.codes_uncond_prompt(CAPTION, LYRICS, "harsh")


def test_codes_prompt_from_a_long_cot_caption_matches(tokenizer, manifest):
    # YAML line wrapping of a long caption and the `</think>\n\n<|im_end|>\n` tail.
    case = manifest["cases"]["lm_cot_and_codes"]
    text = prompts.codes_prompt(CAPTION, LYRICS, prompts.format_metadata_as_cot(case["metadata"]))
    assert text == case["phases"][1]["prompt_text"]
    ids = tokenizer.encode(text)
    assert ids == load_golden("lm_cot_and_codes")["in.phase1_prompt_ids"][0].tolist()
    assert ids[-4:] == [151668, 271, 151645, 198]


def test_parse_lm_output_reads_metadata_and_codes(manifest):
    for name in ("lm_cot_nocaption_codes_cfg", "lm_cot_partial_user_metas"):
        case = manifest["cases"][name]
        metadata, codes = prompts.parse_lm_output(case["phases"][0]["generated_text"])
        assert metadata == case["metadata"]
    text = "<think>\nbpm: 90\ncaption: one line\n  two line\n</think>\n\n<|audio_code_7|><|audio_code_63999|>"
    metadata, codes = prompts.parse_lm_output(text)
    assert metadata == {"bpm": 90, "caption": "one line two line"} and codes == [7, 63999]


def test_format_and_sample_prompt_ids(tokenizer, manifest):
    for name in ("lm_format_sample", "lm_create_sample"):
        ids = tokenizer.encode(manifest["cases"][name]["prompt_text"])
        assert ids == load_golden(name)["in.prompt_ids"][0].tolist()
