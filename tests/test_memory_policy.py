"""The memory policy against the official [M] tier table (docs/memory.md#vram-tiers), overrides and fallbacks."""

from __future__ import annotations

import json
import types

import pytest

from acestep_core.errors import InputError
from acestep_core.memory.policy import (GIB, DeviceMemory, clamp_request, decide, detect_device_memory,
                                        lm_size_from_name, memory_from_comfy, memory_from_values,
                                        simulated_memory, tier_for_gb, vae_chunk_frames_for)


def gpu(gb: float, free_gb: float | None = None, device_type: str = "cuda", bf16: bool = True) -> DeviceMemory:
    free = gb if free_gb is None else free_gb
    return DeviceMemory(device_type, f"test {gb} GB", int(gb * GIB), int(free * GIB), False, bf16)


def cpu(ram_gb: float) -> DeviceMemory:
    return DeviceMemory("cpu", "test CPU", int(ram_gb * GIB), int(ram_gb * GIB), False, False)


# Card size → (tier, lm, init_lm, offload_cpu, offload_dit, max_duration_s, max_batch, vae_chunk).
# Durations / batches are the "with LM" column where the LM runs and "no LM" otherwise (docs/memory.md#vram-tiers);
# VAE chunk from free memory = total here (docs/memory.md#vae-tiling-and-fallback: ≥24 → 512, ≥16 → 384, ≥12 → 256, else 128).
OFFICIAL = {
    2: ("tier1", "none", False, True, True, 360, 1, 128),
    4: ("tier1", "none", False, True, True, 360, 1, 128),
    6: ("tier2", "none", False, True, True, 600, 1, 128),
    8: ("tier3", "0.6B", True, True, True, 480, 2, 128),
    12: ("tier4", "0.6B", True, True, True, 480, 2, 256),
    16: ("tier6a", "1.7B", True, True, False, 480, 4, 384),
    20: ("tier6b", "1.7B", True, False, False, 480, 8, 384),
    24: ("tier6b", "1.7B", True, False, False, 480, 8, 512),
    48: ("unlimited", "4B", True, False, False, 600, 8, 512),
    80: ("unlimited", "4B", True, False, False, 600, 8, 512),
}


@pytest.mark.parametrize("gb", sorted(OFFICIAL))
def test_official_tier_table(gb):
    tier, lm, init_lm, offload, offload_dit, duration, batch, chunk = OFFICIAL[gb]
    d = decide(gpu(gb), env={})
    assert (d.tier, d.lm_model, d.init_lm, d.offload_to_cpu, d.offload_dit_to_cpu,
            d.max_duration_s, d.max_batch, d.vae_chunk_frames) == OFFICIAL[gb]
    assert d.dtype == "bfloat16"
    assert d.reasons and any(tier in r for r in d.reasons)


def test_tier_boundaries_and_16gb_tolerance():
    assert tier_for_gb(4.0).name == "tier1" and tier_for_gb(4.01).name == "tier2"
    assert tier_for_gb(12.0).name == "tier4" and tier_for_gb(12.5).name == "tier5"
    assert tier_for_gb(15.4).name == "tier5"
    assert tier_for_gb(15.6).name == "tier6a"  # a 16 GB card that reports 15.6 GB
    assert tier_for_gb(19.9).name == "tier6a" and tier_for_gb(20.0).name == "tier6b"
    assert tier_for_gb(24.0).name == "tier6b" and tier_for_gb(24.1).name == "unlimited"
    d = decide(gpu(14), env={})
    assert (d.tier, d.lm_model, d.allowed_lms, d.max_batch, d.offload_dit_to_cpu) == \
        ("tier5", "1.7B", ("0.6B", "1.7B"), 4, False)


def test_limits_without_lm_follow_the_no_lm_column():
    d = decide(gpu(12), env={"ACESTEP_INIT_LLM": "0"})
    assert not d.init_lm and d.lm_model == "0.6B"
    assert (d.max_duration_s, d.max_batch) == (600, 4)
    assert any("ACESTEP_INIT_LLM turns the LM off" in r for r in d.reasons)


def test_cpu_policy_runs_everything_in_fp32_without_offload():
    d = decide(cpu(24), env={})
    assert (d.tier, d.offload_to_cpu, d.offload_dit_to_cpu, d.dtype, d.vae_chunk_frames) == \
        ("cpu", False, False, "float32", 512)  # 24 GB free RAM: the larger VAE tile (vae.decode_chunk_frames)
    assert d.lm_model == "0.6B" and not d.init_lm  # allowed, off by default (slow on CPU)
    assert d.max_duration_s == 600
    on = decide(cpu(24), env={"ACESTEP_INIT_LLM": "1", "ACESTEP_OFFLOAD_TO_CPU": "1"})
    assert on.init_lm and on.lm_model == "0.6B" and not on.offload_to_cpu
    assert any("ignored on the CPU" in r for r in on.reasons)
    small = decide(cpu(8), env={})
    assert small.lm_model == "none" and small.allowed_lms == ()
    big = decide(cpu(64), env={"ACESTEP_LM_MODEL_PATH": "acestep-5Hz-lm-4B"})
    assert big.allowed_lms == ("0.6B", "1.7B", "4B") and big.lm_model == "4B"


def test_mps_keeps_unified_memory_and_uses_fp16():
    d = decide(gpu(16, device_type="mps"), env={})
    assert (d.offload_to_cpu, d.offload_dit_to_cpu, d.dtype, d.lm_dtype, d.vae_chunk_frames) == \
        (False, False, "float16", "float32", 512)


def test_pre_ampere_cuda_gets_fp16():
    assert decide(gpu(11, bf16=False), env={}).dtype == "float16"


# ---- overrides -------------------------------------------------------------------------------


def test_lm_path_the_tier_cannot_hold_falls_back_with_a_message():
    d = decide(gpu(8), env={"ACESTEP_LM_MODEL_PATH": "/models/acestep-5Hz-lm-4B"})
    assert d.lm_model == "0.6B" and d.lm_model_path is None and d.init_lm
    assert any("cannot hold" in r and "4B" in r and "0.6B" in r for r in d.reasons)


def test_lm_path_the_tier_holds_is_kept():
    d = decide(gpu(24), env={"ACESTEP_LM_MODEL_PATH": "/models/acestep-5Hz-lm-4B"})
    assert (d.lm_model, d.lm_model_path, d.lm_folder) == ("4B", "/models/acestep-5Hz-lm-4B", "acestep-5Hz-lm-4B")


def test_requested_lm_wins_over_env_and_none_turns_it_off():
    env = {"ACESTEP_LM_MODEL_PATH": "acestep-5Hz-lm-0.6B"}
    assert decide(gpu(16), env=env, requested_lm="1.7B").lm_model == "1.7B"
    off = decide(gpu(16), env=env, requested_lm="none")
    assert not off.init_lm and off.max_batch == 8
    assert decide(gpu(16), env=env, requested_lm="auto").lm_model == "0.6B"


def test_init_llm_forced_on_a_tier_without_lm_uses_the_smallest_with_a_warning():
    d = decide(gpu(4), env={"ACESTEP_INIT_LLM": "yes", "ACESTEP_LM_MODEL_PATH": "acestep-5Hz-lm-1.7B"})
    assert d.init_lm and d.lm_model == "0.6B"
    assert (d.max_duration_s, d.max_batch) == (240, 1)
    assert any("forced on" in r for r in d.reasons)
    quiet = decide(gpu(4), env={"ACESTEP_LM_MODEL_PATH": "acestep-5Hz-lm-1.7B"})
    assert not quiet.init_lm and quiet.lm_model == "none"
    assert any("ACESTEP_INIT_LLM=1" in r for r in quiet.reasons)


def test_offload_overrides():
    d = decide(gpu(8), env={"ACESTEP_OFFLOAD_TO_CPU": "false"})
    assert not d.offload_to_cpu and not d.offload_dit_to_cpu
    d = decide(gpu(16), env={"ACESTEP_OFFLOAD_DIT_TO_CPU": "1"})
    assert d.offload_to_cpu and d.offload_dit_to_cpu
    d = decide(gpu(24), env={"ACESTEP_OFFLOAD_TO_CPU": "on"})
    assert d.offload_to_cpu and not d.offload_dit_to_cpu
    d = decide(gpu(24), env={"ACESTEP_OFFLOAD_DIT_TO_CPU": "1"})
    assert not d.offload_dit_to_cpu  # DiT offload only exists together with CPU offload
    assert any("DiT offload needs CPU offload" in r for r in d.reasons)


def test_bad_override_values_are_ignored_with_a_message():
    d = decide(gpu(12), env={"ACESTEP_INIT_LLM": "maybe", "ACESTEP_VAE_DECODE_CHUNK_SIZE": "big",
                             "ACESTEP_LM_MODEL_PATH": "my-own-lm"})
    assert d.init_lm and d.lm_model == "0.6B" and d.vae_chunk_frames == 256
    text = " ".join(d.reasons)
    assert "'maybe' is not a yes/no value" in text
    assert "'big' is not a positive whole number" in text
    assert "'my-own-lm' is not a 0.6B / 1.7B / 4B LM" in text
    assert decide(gpu(12), env={"ACESTEP_VAE_DECODE_CHUNK_SIZE": "64"}).vae_chunk_frames == 64


def test_lm_missing_on_disk_uses_what_is_there_or_turns_off():
    d = decide(gpu(16), env={}, available_lms=["acestep-5Hz-lm-0.6B"])
    assert d.lm_model == "0.6B" and d.init_lm
    assert any("not in the checkpoint folder" in r for r in d.reasons)
    d = decide(gpu(8), env={}, available_lms=["acestep-5Hz-lm-4B"])
    assert not d.init_lm and d.max_batch == 2
    assert any("No usable LM checkpoint" in r for r in d.reasons)
    assert decide(gpu(48), env={}, available_lms=["4B", "1.7B"]).lm_model == "4B"


def test_the_decision_says_why_the_lm_is_off():
    """A front end whose user needs the LM can say why the policy left it off (and nothing when it runs)."""
    assert decide(cpu(32), env={}).lm_off_reason == "it is off by default on the CPU, where it is slow"
    assert decide(gpu(4), env={}).lm_off_reason == "tier1 (≤4 GB) has no room for one"
    assert decide(gpu(16), env={}, requested_lm="none").lm_off_reason == "it was set to none"
    assert decide(gpu(16), env={"ACESTEP_INIT_LLM": "0"}).lm_off_reason == "ACESTEP_INIT_LLM turns it off"
    missing = decide(gpu(8), env={}, available_lms=["acestep-5Hz-lm-4B"]).lm_off_reason
    assert missing == "no 5 Hz LM checkpoint is installed (expected acestep-5Hz-lm-0.6B)"
    on = decide(gpu(16), env={})
    assert on.init_lm and on.lm_off_reason is None
    assert decide(cpu(32), env={"ACESTEP_INIT_LLM": "1"}).lm_off_reason is None


def test_vae_chunk_follows_free_memory():
    assert decide(gpu(24, free_gb=10), env={}).vae_chunk_frames == 128
    assert [vae_chunk_frames_for("cuda", int(g * GIB)) for g in (30, 20, 13, 6)] == [512, 384, 256, 128]
    assert vae_chunk_frames_for("cpu", 0) == 256
    low = decide(gpu(24, free_gb=6), env={})
    assert any("Only 6.0 of 24.0 GB are free" in r for r in low.reasons)


def test_decision_is_frozen_serialisable_and_summarised():
    d = decide(gpu(12), env={})
    with pytest.raises(Exception):
        d.tier = "x"  # type: ignore[misc]
    data = json.loads(json.dumps(d.to_dict()))
    assert data["tier"] == "tier4" and data["lm_folder"] == "acestep-5Hz-lm-0.6B"
    assert data["summary"] == d.summary()
    assert "tier4" in d.summary() and "0.6B" in d.summary() and "CPU+DiT" in d.summary()


# ---- clamping --------------------------------------------------------------------------------


def test_clamp_request_with_messages():
    d = decide(gpu(4), env={})
    duration, batch, messages = clamp_request(d, 600, 4)
    assert (duration, batch) == (360.0, 1)
    assert len(messages) == 2 and "360 s" in messages[0] and "limit of 1" in messages[1]
    assert clamp_request(d, 120, 1) == (120, 1, [])
    assert clamp_request(d, None, None) == (None, None, [])


# ---- measurement -----------------------------------------------------------------------------


def test_max_cuda_vram_simulates_a_card():
    m = detect_device_memory(env={"MAX_CUDA_VRAM": "6"})
    assert m.device_type == "cuda" and m.simulated and m.total_bytes <= 6 * GIB
    assert decide(m, env={}).tier == "tier2"
    assert detect_device_memory(env={"MAX_MPS_VRAM": "32"}).device_type == "mps"
    # A simulation of another device type does not apply to an explicit CPU device.
    assert detect_device_memory("cpu", env={"MAX_CUDA_VRAM": "6"}).device_type == "cpu"


def test_cpu_detection_reads_system_ram():
    m = detect_device_memory("cpu", env={})
    assert m.device_type == "cpu" and not m.simulated
    assert m.total_bytes > 512 * 1024**2 and 0 < m.free_bytes <= m.total_bytes


def test_simulated_memory_rejects_non_positive_sizes():
    with pytest.raises(InputError, match="positive"):
        simulated_memory(0)


def test_memory_from_values_and_comfy():
    m = memory_from_values("cuda:0", 8 * GIB, 6 * GIB, name="RTX")
    assert (m.device_type, m.total_gb, m.free_gb) == ("cuda", 8.0, 6.0)
    assert memory_from_values("privateuseone", 4 * GIB).device_type == "cuda"  # DirectML-like
    fake = types.SimpleNamespace(
        get_torch_device=lambda: types.SimpleNamespace(type="cuda", index=0, __str__=lambda self: "cuda:0"),
        get_total_memory=lambda dev: 12 * GIB,
        get_free_memory=lambda dev: 9 * GIB,
        should_use_bf16=lambda dev: False,
    )
    m = memory_from_comfy(fake)
    assert (m.device_type, m.total_gb, m.free_gb, m.bf16_supported) == ("cuda", 12.0, 9.0, False)
    d = decide(m, env={})
    assert d.tier == "tier4" and d.dtype == "float16"


def test_engine_memory_modules_do_not_import_comfy():
    import subprocess
    import sys

    code = ("import sys, acestep_core.memory.policy, acestep_core.memory.offload, "
            "acestep_core.memory.vae_fallback, acestep_core.cli.doctor; "
            "print(sorted(m for m in sys.modules if m == 'comfy' or m.startswith('comfy.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_lm_size_from_name():
    assert lm_size_from_name("acestep-5Hz-lm-0.6B") == "0.6B"
    assert lm_size_from_name("/x/acestep-5Hz-lm-1.7B/") == "1.7B"
    assert lm_size_from_name("acestep-5Hz-lm-0.6B-v4-fix") == "0.6B"
    assert lm_size_from_name("qwen_4b_ace15.safetensors") == "4B"
    assert lm_size_from_name("acestep-5Hz-lm-tiny") is None
    assert lm_size_from_name("acestep-v15-turbo") is None


def test_pipeline_kwargs_apply_the_decision():
    d = decide(gpu(8), env={})
    assert d.pipeline_kwargs() == {"offload_to_cpu": True, "offload_dit_to_cpu": True,
                                   "vae_chunk_frames": 128, "vae_chunk_fixed": False, "dtype": "bfloat16"}
    fixed = decide(gpu(8), env={"ACESTEP_VAE_DECODE_CHUNK_SIZE": "200"})
    assert (fixed.vae_chunk_frames, fixed.vae_chunk_fixed) == (200, True)
    assert fixed.pipeline_kwargs()["vae_chunk_fixed"] is True
    ignored = decide(gpu(8), env={"ACESTEP_VAE_DECODE_CHUNK_SIZE": "big"})
    assert (ignored.vae_chunk_frames, ignored.vae_chunk_fixed) == (128, False)
    assert any("'big' is not a positive whole number; ignored" in r for r in ignored.reasons)


# ---- the one dtype rule (docs/memory.md#dtypes) -----------------------------------------------


def native_bf16_cpu(ram_gb: float) -> DeviceMemory:
    return DeviceMemory("cpu", "test CPU with AVX512-BF16", int(ram_gb * GIB), int(ram_gb * GIB), False, True)


def test_cpu_with_native_bf16_runs_bf16_unless_told_otherwise():
    d = decide(native_bf16_cpu(24), env={})
    assert (d.dtype, d.lm_dtype) == ("bfloat16", "bfloat16")
    assert any("natively" in r and "ACESTEP_CPU_BF16=0" in r for r in d.reasons)  # the user is told how to opt out
    on = decide(native_bf16_cpu(24), env={"ACESTEP_CPU_BF16": "1"})
    assert (on.dtype, on.lm_dtype) == ("bfloat16", "bfloat16")
    off = decide(native_bf16_cpu(24), env={"ACESTEP_CPU_BF16": "0"})
    assert (off.dtype, off.lm_dtype) == ("float32", "float32")
    forced = decide(cpu(24), env={"ACESTEP_CPU_BF16": "1"})
    assert (forced.dtype, forced.lm_dtype) == ("bfloat16", "bfloat16")
    assert decide(cpu(24), env={"ACESTEP_CPU_BF16": "maybe"}).dtype == "float32"  # not yes/no: detection


def test_resolve_dtype_is_the_same_rule_for_pipeline_and_lm(monkeypatch):
    import torch

    from acestep_core.lm.model import resolve_dtype as lm_dtype
    from acestep_core.memory import dtypes
    from acestep_core.pipeline import resolve_dtype as pipeline_dtype

    cpu_device = torch.device("cpu")
    for native, expected in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(dtypes, "cpu_has_native_bf16", lambda native=native: native)
        monkeypatch.delenv("ACESTEP_CPU_BF16", raising=False)
        assert pipeline_dtype("auto", cpu_device) == lm_dtype("auto", cpu_device) == expected
        monkeypatch.setenv("ACESTEP_CPU_BF16", "1")
        assert pipeline_dtype("auto", cpu_device) == lm_dtype("auto", cpu_device) == torch.bfloat16
        monkeypatch.setenv("ACESTEP_CPU_BF16", "0")
        assert pipeline_dtype("auto", cpu_device) == lm_dtype(None, cpu_device) == torch.float32
    assert pipeline_dtype("bf16", cpu_device) == torch.bfloat16
    assert pipeline_dtype("float32", cpu_device) == lm_dtype("fp32", cpu_device) == torch.float32
    assert pipeline_dtype("auto", torch.device("mps")) == torch.float16
    assert lm_dtype("auto", torch.device("mps")) == torch.float32
    with pytest.raises(InputError, match="dtype must be auto, float32, bfloat16 or float16"):
        pipeline_dtype("float8", cpu_device)


def test_cpu_detection_reads_the_cpu_flags(monkeypatch, tmp_path):
    from acestep_core.memory import dtypes

    assert isinstance(dtypes.cpu_has_native_bf16(), bool)
    monkeypatch.setattr(dtypes.platform, "machine", lambda: "arm64")
    dtypes.cpu_has_native_bf16.cache_clear()
    try:
        assert dtypes.cpu_has_native_bf16() is False  # Apple / ARM: float32 (bf16 is not a fast path there)
    finally:
        monkeypatch.undo()
        dtypes.cpu_has_native_bf16.cache_clear()
    assert memory_from_values("cpu", 8 * GIB).bf16_supported == dtypes.cpu_has_native_bf16()
    assert memory_from_values("cuda", 8 * GIB).bf16_supported


@pytest.mark.parametrize("machine, probe, flags, expected", [
    ("x86_64", lambda: True, "", True),                          # torch's probe answers
    ("x86_64", lambda: False, "avx512_bf16 amx_tile", False),    # its answer wins over the flags
    ("x86_64", None, "fpu avx512_bf16 amx_tile amx_bf16", True),  # no probe: the kernel's flags
    ("x86_64", None, "fpu avx512_bf16", False),
    ("arm64", lambda: True, "amx_tile", False),                  # not x86: never
])
def test_amx_detection_asks_torch_then_the_flags(machine, probe, flags, expected, monkeypatch):
    import torch

    from acestep_core.memory import dtypes

    monkeypatch.setattr(dtypes.platform, "machine", lambda: machine)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", probe, raising=False)
    monkeypatch.setattr(dtypes, "_cpuinfo_field", lambda name: flags if name == "flags" else "")
    dtypes.cpu_has_amx.cache_clear()
    try:
        assert dtypes.cpu_has_amx() is expected
    finally:
        monkeypatch.undo()
        dtypes.cpu_has_amx.cache_clear()
