"""Component goldens: condition encoder + DiT forward, audio tokenizer, codes → hints."""

import torch

from conftest import load_golden
from engine_helpers import tiny_pipeline

from acestep_core.codes import codes_to_hints, latents_to_codes, parse_audio_codes


def test_condition_encoder_and_dit_forward():
    g = load_golden("component_dit_forward")
    dit = tiny_pipeline().dit
    enc, mask = dit.condition_encoder(
        text_hidden_states=g["in.text_hidden_states"],
        text_attention_mask=g["in.text_attention_mask"],
        lyric_hidden_states=g["in.lyric_hidden_states"],
        lyric_attention_mask=g["in.lyric_attention_mask"],
        refer_audio_acoustic_hidden_states_packed=g["in.refer_audio_latents"],
        refer_audio_order_mask=g["in.refer_audio_order_mask"],
    )
    assert (enc - g["out.encoder_hidden_states"]).abs().max().item() <= 1e-5
    assert torch.equal(mask.long(), g["out.encoder_attention_mask"].long())
    t = g["in.timestep"]
    v = dit.transformer(hidden_states=g["in.xt"], timestep=t, timestep_r=t, encoder_hidden_states=enc,
                        context_latents=g["in.context_latents"], return_dict=False)[0]
    assert (v - g["out.velocity"]).abs().max().item() <= 1e-4
    null = dit.condition_encoder.null_condition_emb.expand_as(enc)
    v_null = dit.transformer(hidden_states=g["in.xt"], timestep=t, timestep_r=t, encoder_hidden_states=null,
                             context_latents=g["in.context_latents"], return_dict=False)[0]
    assert (v_null - g["out.velocity_null_condition"]).abs().max().item() <= 1e-4


def test_audio_tokenizer_pads_with_silence_and_quantizes_exactly():
    g = load_golden("component_tokenize")
    dit = tiny_pipeline().dit
    quantized, indices = latents_to_codes(dit, g["in.latents"])
    assert torch.equal(indices.long(), g["out.indices"].long())
    assert (quantized - g["out.quantized"]).abs().max().item() <= 1e-5
    detok = dit.detokenizer(quantized)
    assert (detok - g["out.detokenized"]).abs().max().item() <= 1e-5


def test_code_string_to_hints(manifest):
    g = load_golden("component_codes_to_hints")
    case = manifest["cases"]["component_codes_to_hints"]
    codes = parse_audio_codes(case["code_string"])
    assert codes == g["in.codes_clamped"].flatten().tolist()
    assert 63999 in codes and max(codes) == 63999  # 64010 clamps
    dit = tiny_pipeline().dit
    hints = codes_to_hints(dit, codes, "cpu", torch.float32)
    assert (hints - g["out.lm_hints_25hz"]).abs().max().item() <= 1e-5
