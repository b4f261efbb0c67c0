"""bfloat16 LM weights packed in oneDNN's layout for long CPU loops: used only where they change no bit."""

import logging

import pytest
import torch

from acestep_core.errors import InputError
from acestep_core.lm import LMPlanner, LMSampling, packed_weights
from acestep_core.lm.generation import decode_codes
from acestep_core.lm.packed_weights import PackedWeights, eligible, packing_enabled

ROWS = [[151644, 8948, 198, 2, 17, 40, 151645, 198, 151644, 872], [151644, 8948, 198, 5, 151645, 198]]
CFG = LMSampling(temperature=0.85, cfg_scale=2.0, top_p=0.9)
GiB = 1 << 30


@pytest.fixture(scope="module")
def planner(tiny_dir):
    return LMPlanner.from_pretrained(tiny_dir / "acestep-5Hz-lm-tiny", device="cpu", dtype="bfloat16")


@pytest.fixture
def packing(monkeypatch, planner):
    """A clean per-process state, a CPU that counts as native bf16 and plenty of RAM.

    Skips where this torch build cannot reorder bf16 weights at all (then nothing is ever packed)."""
    monkeypatch.setattr(packed_weights, "_checked_shapes", set())
    monkeypatch.setattr(packed_weights, "_layouts_differ", False)
    monkeypatch.setattr("acestep_core.memory.dtypes.cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(packed_weights, "_available_ram", lambda: (64 * GiB, 60 * GiB))
    monkeypatch.delenv(packed_weights.ENV, raising=False)
    if not torch.backends.mkldnn.is_available():
        pytest.skip("this torch build has no oneDNN: the LM weights are never packed")
    try:
        packed_weights._reorder(planner.model.model.layers[0].mlp.up_proj.weight)
    except RuntimeError as exc:
        pytest.skip(f"oneDNN cannot reorder bfloat16 weights on this CPU, so they are never packed: {exc}")
    return planner.decoder


def run_codes(decoder, codes=80, seen=None):
    progress = None if seen is None else (lambda done, total: seen.append(decoder.packed is not None))
    return decode_codes(decoder, ROWS, codes, CFG, torch.Generator().manual_seed(5), 2.0, progress).generated_ids


@pytest.mark.parametrize("value, expected", [("", True), ("auto", True), ("1", True), (" ON ", True),
                                             ("0", False), ("off", False)])
def test_the_environment_turns_packing_on_or_off(monkeypatch, value, expected):
    monkeypatch.setenv(packed_weights.ENV, value)
    assert packing_enabled() is expected


def test_a_bad_environment_value_is_a_clear_error(monkeypatch, packing):
    monkeypatch.setenv(packed_weights.ENV, "fast")
    with pytest.raises(InputError, match="ACESTEP_LM_PACKED_WEIGHTS='fast' is not understood: set 0"):
        run_codes(packing)


def test_a_long_loop_runs_on_packed_weights_and_decodes_the_same_codes(monkeypatch, packing):
    monkeypatch.setenv(packed_weights.ENV, "0")
    plain = run_codes(packing)
    monkeypatch.delenv(packed_weights.ENV)
    seen: list[bool] = []
    packed = run_codes(packing, seen=seen)
    assert packed == plain
    assert len(seen) == 81 and all(seen[:-1])   # every step ran with the packed weights in place
    assert not seen[-1] and packing.packed is None  # and they are gone once the loop is over
    # the bit check ran on every group's shape: q/k/v and gate/up each packed as one matrix
    groups = packing._step_weight_groups()
    assert packed_weights._checked_shapes == {packed_weights.group_shape(g) for g in groups}
    assert [len(g) for g in groups[:4]] == [3, 1, 2, 1]


def test_packed_products_equal_the_plain_ones_for_the_rows_a_step_has(packing):
    groups = packing._step_weight_groups()
    pack = PackedWeights.build(groups)
    assert pack is not None and pack.nbytes == sum(w.numel() * 2 for g in groups for w in g)
    qkv, o, gate_up, code_rows = groups[0], groups[1], groups[2], groups[-1]
    for group in (qkv, o, gate_up, code_rows):
        for rows in (1, 2):
            x = torch.randn(rows, 1, group[0].shape[1]).to(torch.bfloat16)
            out = pack.linear(x, *group)
            assert len(out) == len(group)
            for product, weight in zip(out, group):
                assert product.shape == (rows, 1, weight.shape[0])
                assert torch.equal(product, torch.nn.functional.linear(x, weight))
    # only the groups that were packed are found: not one weight of a group, not another order
    assert pack.linear(torch.ones(1, qkv[0].shape[1], dtype=torch.bfloat16), qkv[0]) is None
    assert pack.linear(torch.ones(1, qkv[0].shape[1], dtype=torch.bfloat16), *reversed(qkv)) is None
    assert pack.linear(torch.ones(1, 8, dtype=torch.bfloat16), torch.ones(3, 8, dtype=torch.bfloat16)) is None


def test_a_group_of_weights_with_different_inputs_is_refused(packing):
    with pytest.raises(ValueError, match="same input features"):
        PackedWeights.build([(torch.ones(4, 8, dtype=torch.bfloat16), torch.ones(4, 16, dtype=torch.bfloat16))])


@pytest.mark.parametrize("why, setup", [
    ("short loop", lambda m, d: None),
    ("off", lambda m, d: m.setenv(packed_weights.ENV, "0")),
    ("no native bf16", lambda m, d: m.setattr("acestep_core.memory.dtypes.cpu_has_native_bf16", lambda: False)),
])
def test_nothing_is_packed_where_it_would_not_pay(monkeypatch, packing, why, setup):
    setup(monkeypatch, packing)
    codes = 10 if why == "short loop" else 80
    seen: list[bool] = []
    run_codes(packing, codes, seen)
    assert not any(seen)


def test_float32_weights_are_never_packed(tiny_dir, packing):
    float32 = LMPlanner.from_pretrained(tiny_dir / "acestep-5Hz-lm-tiny", device="cpu", dtype="float32")
    assert not eligible(float32.decoder.embed.weight, 10_000)
    seen: list[bool] = []
    run_codes(float32.decoder, 80, seen)
    assert not any(seen)


def test_short_ram_leaves_the_weights_plain(monkeypatch, packing, caplog):
    nbytes = sum(w.numel() * 2 for g in packing._step_weight_groups() for w in g)
    monkeypatch.setattr(packed_weights, "_available_ram", lambda: (8 * GiB, 2 * GiB + nbytes - 1))
    with caplog.at_level(logging.INFO, logger="acestep_core.lm.packed_weights"):
        assert PackedWeights.build(packing._step_weight_groups()) is None
    assert "would leave too little free RAM" in caplog.text
    monkeypatch.setattr(packed_weights, "_available_ram", lambda: (8 * GiB, 2 * GiB + nbytes))
    assert PackedWeights.build(packing._step_weight_groups()) is not None


def test_a_layout_that_changes_bits_is_never_used(monkeypatch, packing, caplog):
    real = packed_weights._packed_linear
    monkeypatch.setattr(packed_weights, "_packed_linear", lambda x, p: real(x, p) * 1.0078125)
    with caplog.at_level(logging.INFO, logger="acestep_core.lm.packed_weights"):
        seen: list[bool] = []
        run_codes(packing, 80, seen)
    assert not any(seen) and "gives other bits on this CPU" in caplog.text
    assert not eligible(packing.embed.weight, 10_000)  # for the rest of the process


def test_a_session_keeps_the_pack_for_every_loop_inside_it(packing):
    with packing.session(steps=500):
        outer = packing.packed
        assert outer is not None
        run_codes(packing, 80)
        assert packing.packed is outer      # the inner loop reused it and did not drop it
    assert packing.packed is None


def test_the_planner_runs_both_phases_on_one_pack_when_the_duration_is_known(monkeypatch, planner, packing):
    monkeypatch.setattr(packed_weights, "MIN_STEPS", 40)
    seen: list[bool] = []
    out = planner.generate_with_stop_condition(
        "calm piano", "[Instrumental]", sampling=CFG, target_duration=10, cot_max_new_tokens=30,
        progress=lambda done, total: seen.append(packing.packed is not None), generator=torch.Generator().manual_seed(2))
    assert [len(p.generated_ids) > 0 for p in out.phases] == [True, True]
    assert len(out.phases[1].generated_ids) == 51  # 50 codes and EOS
    assert seen and all(seen)  # the CoT steps ran on the pack too
    assert packing.packed is None


def test_weights_packed_one_by_one_still_serve_a_group(monkeypatch, packing):
    """A group not packed as one matrix runs through each weight's own packed copy (the A/B of
    bench/bench_lm_ops.py), with the same products."""
    qkv = packing._step_weight_groups()[0]
    single = PackedWeights.build([(w,) for w in qkv])
    calls = []
    real = packed_weights._packed_linear
    monkeypatch.setattr(packed_weights, "_packed_linear", lambda x, p: calls.append(p) or real(x, p))
    x = torch.randn(2, 1, qkv[0].shape[1]).to(torch.bfloat16)
    packing.packed = single
    try:
        out = packing._project_each(x, *qkv)
    finally:
        packing.packed = None
    assert len(calls) == 3
    for product, weight in zip(out, qkv):
        assert torch.equal(product, torch.nn.functional.linear(x, weight))
