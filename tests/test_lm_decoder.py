"""The static-KV-cache decoder against the transformers model it runs on (tiny LM, float32 CPU)."""

import copy
import os

import pytest
import torch
import torch.nn.functional as F

from acestep_core.lm import LMPlanner, LMSampling
from acestep_core.lm.constants import AUDIO_CODE_BASE, IM_END_ID, NUM_VALID_CODES
from acestep_core.lm import decoder as decoder_module
from acestep_core.lm.decoder import StaticCacheDecoder, _project
from acestep_core.lm.generation import decode_codes, left_pad
from acestep_core.lm.model import build_model

ROWS = [[151644, 8948, 198, 2, 17, 40, 151645, 198, 151644, 872], [151644, 8948, 198, 5, 151645, 198]]


@pytest.fixture(scope="module")
def model(tiny_dir):
    return LMPlanner.from_pretrained(tiny_dir / "acestep-5Hz-lm-tiny", device="cpu", dtype="float32").model


@pytest.fixture(scope="module")
def gqa_model():
    """Random weights with 4 query heads sharing 2 KV heads (the tiny LM has one of each)."""
    torch.manual_seed(0)
    config = dict(vocab_size=217204, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=16, rope_theta=1e6,
                  rms_norm_eps=1e-6, max_position_embeddings=512, hidden_act="silu")
    return build_model(config, None, torch.float32, torch.device("cpu"))


def hf_last_hidden(model, row):
    with torch.inference_mode():
        out = model.model(input_ids=torch.tensor([row]))
    return out.last_hidden_state[0]


@pytest.mark.parametrize("transposed", [True, False])
@pytest.mark.parametrize("rows", [4, 2, 1, 9])
def test_cpu_projection_matches_linear_in_every_layout(rows, transposed, monkeypatch):
    """Both few-row float32 formulations (the one this CPU's vendor gets, and the other)."""
    monkeypatch.setattr(decoder_module, "few_rows_transposed", lambda: transposed)
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(48, 32, generator=gen)
    x = torch.randn(rows, 1, 32, generator=gen)
    assert torch.allclose(_project(x, w), F.linear(x, w), atol=1e-5)
    strided = torch.randn(32, rows, generator=gen).t()[:, None, :]  # non-contiguous activations
    assert torch.allclose(_project(strided, w), F.linear(strided, w), atol=1e-5)


@pytest.mark.parametrize("which", ["model", "gqa_model"])
def test_prefill_and_decode_match_transformers_on_a_padded_cfg_batch(which, request):
    model = request.getfixturevalue(which)
    decoder = StaticCacheDecoder(model)
    ids, mask = left_pad(ROWS)
    decoder.reset(2, 32)
    with torch.inference_mode():
        hidden = decoder.forward(ids, 0, mask)
        nxt = torch.tensor([[AUDIO_CODE_BASE + 7], [AUDIO_CODE_BASE + 7]])
        stepped = decoder.decode(nxt, ids.shape[1])
    for b, row in enumerate(ROWS):
        ref = hf_last_hidden(model, row)
        assert torch.allclose(hidden[b, -1], ref[-1], atol=1e-4)
        ref_next = hf_last_hidden(model, row + [AUDIO_CODE_BASE + 7])[-1]
        assert torch.allclose(stepped[b], ref_next, atol=1e-4)


@pytest.mark.parametrize("vendor, transposed", [("GenuineIntel", False), ("AuthenticAMD", True), ("", True)])
def test_few_row_formulation_follows_the_cpu_vendor(vendor, transposed, monkeypatch):
    monkeypatch.setattr(decoder_module, "cpu_vendor", lambda: vendor)
    decoder_module.few_rows_transposed.cache_clear()
    try:
        assert decoder_module.few_rows_transposed() is transposed
    finally:
        decoder_module.few_rows_transposed.cache_clear()


@pytest.mark.parametrize("amx", [True, False])
def test_bfloat16_one_token_step_matches_transformers_and_hides_the_padding(gqa_model, amx, monkeypatch):
    """The half-precision CPU step attends through SDPA over the cache slice in place, in the query
    layout of either kind of CPU (with AMX: 16 heads and `enable_gqa`; without: folded): it agrees
    with transformers' own bfloat16 forward, and keys in the left padding have no effect at all."""
    monkeypatch.setattr(decoder_module, "cpu_has_amx", lambda: amx)
    model = copy.deepcopy(gqa_model).to(torch.bfloat16)
    decoder = StaticCacheDecoder(model)
    ids, mask = left_pad(ROWS)
    nxt = torch.tensor([[AUDIO_CODE_BASE + 7], [AUDIO_CODE_BASE + 7]])
    decoder.reset(2, 32)
    with torch.inference_mode():
        decoder.forward(ids, 0, mask)
        stepped = decoder.decode(nxt, ids.shape[1])
        for b, row in enumerate(ROWS):
            ref = hf_last_hidden(model, row + [AUDIO_CODE_BASE + 7])[-1].float()
            err = (stepped[b].float() - ref).norm() / ref.norm()
            assert err < 0.03, f"row {b}: relative error {err:.4f} against transformers in bfloat16"
        pad = int((mask[1] == 0).sum())
        assert pad > 0
        decoder.cache.k[:, 1, :, :pad] = 1e4  # poison the padded keys and values of row 1
        decoder.cache.v[:, 1, :, :pad] = -1e4
        again = decoder.decode(nxt, ids.shape[1])
    assert torch.equal(again, stepped)


@pytest.mark.parametrize("dtype, amx", [(torch.float32, False), (torch.bfloat16, True), (torch.bfloat16, False)])
def test_one_token_steps_without_padding_match_transformers(gqa_model, dtype, amx, monkeypatch):
    """A single unpadded row: the CPU steps attend with no mask at all, in every query layout."""
    monkeypatch.setattr(decoder_module, "cpu_has_amx", lambda: amx)
    model = copy.deepcopy(gqa_model).to(dtype)
    decoder = StaticCacheDecoder(model)
    row = ROWS[0]
    decoder.reset(1, 32)
    with torch.inference_mode():
        decoder.forward(torch.tensor([row]), 0)
        assert not decoder.has_padding
        states = [decoder.decode(torch.tensor([[AUDIO_CODE_BASE + t]]), len(row) + i)[0] for i, t in enumerate((7, 3))]
    for i, state in enumerate(states):
        ref = hf_last_hidden(model, row + [AUDIO_CODE_BASE + 7, AUDIO_CODE_BASE + 3][: i + 1])[-1].float()
        err = (state.float() - ref).norm() / ref.norm()
        assert err < (1e-5 if dtype == torch.float32 else 0.03), f"step {i}: relative error {err:.2e}"


@pytest.mark.parametrize("which", ["model", "gqa_model"])
def test_last_only_prefill_keeps_the_last_state_and_the_whole_cache(which, request):
    """A prefill that runs its last layer for the last query alone changes nothing downstream."""
    model = request.getfixturevalue(which)
    decoder = StaticCacheDecoder(model)
    ids, mask = left_pad(ROWS)
    nxt = torch.tensor([[AUDIO_CODE_BASE + 7], [AUDIO_CODE_BASE + 7]])
    results = []
    for last_only in (False, True):
        decoder.reset(2, 32)
        with torch.inference_mode():
            hidden = decoder.forward(ids, 0, mask, last_only=last_only)
            cache = decoder.cache.k[:, :, :, : ids.shape[1]].clone(), decoder.cache.v[:, :, :, : ids.shape[1]].clone()
            stepped = decoder.decode(nxt, ids.shape[1])
        results.append((hidden[:, -1], cache, stepped))
    (full, (k0, v0), step0), (last, (k1, v1), step1) = results
    assert hidden.shape[1] == 1
    assert torch.allclose(full, last, atol=1e-5)
    assert torch.equal(k0, k1) and torch.equal(v0, v1)
    assert torch.allclose(step0, step1, atol=1e-5)


@pytest.mark.parametrize("which", ["model", "gqa_model"])
def test_static_step_equals_the_eager_step(which, request):
    """The fixed-shape step (what torch.compile / CUDA graphs capture) computes the same state."""
    model = request.getfixturevalue(which)
    decoder = StaticCacheDecoder(model)
    ids, mask = left_pad(ROWS)
    tokens = [AUDIO_CODE_BASE + 3, AUDIO_CODE_BASE + 11, AUDIO_CODE_BASE + 5]
    results = []
    for static in (False, True):
        decoder.reset(2, 40)
        with torch.inference_mode():
            decoder.forward(ids, 0, mask)
            out = []
            for i, t in enumerate(tokens):
                tok = torch.full((2, 1), t)
                pos = ids.shape[1] + i
                out.append(decoder.step_static(tok, torch.tensor([pos])) if static else decoder.decode(tok, pos))
        results.append(torch.stack(out))
    assert torch.allclose(results[0], results[1], atol=1e-5)


def test_code_heads_are_the_code_columns_of_the_full_head(model):
    decoder = StaticCacheDecoder(model)
    hidden = torch.randn(2, model.config.hidden_size, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        full = decoder.full_logits(hidden)
        codes = decoder.code_logits(hidden)
        with_eos = decoder.codes_logits(hidden)
    assert codes.shape == (2, NUM_VALID_CODES)
    assert torch.allclose(codes, full[:, AUDIO_CODE_BASE:AUDIO_CODE_BASE + NUM_VALID_CODES], atol=1e-5)
    assert torch.allclose(with_eos[:, -1], full[:, IM_END_ID], atol=1e-5)
    assert decoder.code_rows.data_ptr() == model.model.embed_tokens.weight[AUDIO_CODE_BASE].data_ptr()  # a view


def test_decode_threads_scope_restores_the_thread_count(model, monkeypatch):
    monkeypatch.setenv("ACESTEP_LM_DECODE_THREADS", "1")
    decoder = StaticCacheDecoder(model)
    before = torch.get_num_threads()
    seen = []
    with torch.inference_mode():
        decode_codes(decoder, ROWS, 3, LMSampling(temperature=0.0, cfg_scale=2.0, top_p=1.0), None, 2.0,
                     progress=lambda d, t: seen.append(torch.get_num_threads()))
    assert seen[0] == 1 and torch.get_num_threads() == before


@pytest.mark.skipif(os.environ.get("ACESTEP_TEST_COMPILE") != "1", reason="set ACESTEP_TEST_COMPILE=1 (slow compile)")
def test_compiled_decoder_gives_the_eager_tokens(model):
    sampling = LMSampling(temperature=0.0, cfg_scale=2.0, top_p=1.0)
    eager = decode_codes(StaticCacheDecoder(model, compile=False), ROWS, 6, sampling, None, 2.0)
    compiled = decode_codes(StaticCacheDecoder(model, compile=True), ROWS, 6, sampling, None, 2.0)
    assert compiled.generated_ids == eager.generated_ids
