"""The XL DiT in the memory policy: offload below 20 GB, refused below 12 GB unless overridden."""

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest

from conftest import REPO_ROOT, TINY_DIR

from acestep_core.cli import model_setup
from acestep_core.errors import InsufficientMemoryError
from acestep_core.memory import policy
from acestep_core.memory.policy import decide, is_xl_name, memory_from_values, simulated_memory, xl_rule

XL = "acestep-v15-xl-turbo"
GIB = 1024**3


def test_xl_names():
    for name in (XL, "acestep-v15-xl-sft", "/m/acestep_v1.5_xl_base_bf16.safetensors", "acestep-v15-xl-base-tiny"):
        assert is_xl_name(name), name
    for name in ("acestep-v15-turbo", "acestep_v1.5_turbo.safetensors", "/xl/acestep-v15-base", "axle", None):
        assert not is_xl_name(name), name


@pytest.mark.parametrize("gb,rule,offload", [(8, "refuse", None), (11.9, "refuse", None), (12, "offload", True),
                                             (16, "offload", True), (19.9, "offload", True), (20, "fits", False),
                                             (24, "fits", False), (80, "fits", False)])
def test_xl_tiers_on_cuda(gb, rule, offload):
    assert xl_rule(gb, "cuda") == rule
    decision = decide(simulated_memory(gb), env={}, dit=XL)
    assert decision.dit_is_xl
    if rule == "refuse":
        assert "at least 12 GB" in decision.dit_refusal and "ACESTEP_ALLOW_XL" in decision.dit_refusal
        with pytest.raises(InsufficientMemoryError, match="2B model"):
            decision.check_dit()
    else:
        decision.check_dit()
        assert decision.dit_refusal is None
        assert decision.offload_to_cpu is offload
    # The 2B model on the same card is never refused.
    decide(simulated_memory(gb), env={}, dit="acestep-v15-turbo").check_dit()


def test_xl_at_20_gb_keeps_the_tier_offload_while_2b_below_20_gb_does_too():
    # 20-24 GB (tier6b) has no offload for either model; 12-20 GB offloads for both, XL says why.
    assert not decide(simulated_memory(22), env={}, dit=XL).offload_to_cpu
    reasons = decide(simulated_memory(16), env={}, dit=XL).reasons
    assert any("needs CPU offload below 20 GB" in r for r in reasons)


def test_overrides():
    forced = decide(simulated_memory(8), env={"ACESTEP_ALLOW_XL": "1"}, dit=XL)
    forced.check_dit()
    assert forced.offload_to_cpu and forced.offload_dit_to_cpu
    assert any("loading it anyway" in r for r in forced.reasons)
    kept_off = decide(simulated_memory(16), env={"ACESTEP_OFFLOAD_TO_CPU": "0"}, dit=XL)
    assert not kept_off.offload_to_cpu
    assert any("expect out-of-memory" in r for r in kept_off.reasons)


def test_cpu_ram_decides_on_the_cpu():
    small = decide(memory_from_values("cpu", 8 * GIB, 6 * GIB), env={}, dit=XL)
    assert small.dit_refusal and "RAM" in small.dit_refusal
    big = decide(memory_from_values("cpu", 32 * GIB, 20 * GIB), env={}, dit=XL)
    assert big.dit_refusal is None and not big.offload_to_cpu


def test_cli_default_dit_prefers_the_2b_turbo_then_xl(tmp_path):
    def install(*names):
        for name in names:
            (tmp_path / name).mkdir()
            (tmp_path / name / "config.json").write_text("{}")

    assert model_setup.default_dit(tmp_path) is None
    install("acestep-v15-xl-base", "acestep-v15-xl-turbo")
    assert model_setup.default_dit(tmp_path) == "acestep-v15-xl-turbo"
    assert model_setup.default_dit(tmp_path, fits_xl=False) == "acestep-v15-xl-turbo"  # nothing else to run
    install("acestep-v15-base")
    assert model_setup.default_dit(tmp_path, fits_xl=False) == "acestep-v15-base"
    install("acestep-v15-turbo")
    assert model_setup.default_dit(tmp_path) == "acestep-v15-turbo"


def test_cli_refuses_xl_that_does_not_fit(monkeypatch, tmp_path):
    monkeypatch.setattr(policy, "detect_device_memory", lambda device=None, env=None: simulated_memory(8))
    args = SimpleNamespace(device="cpu", tiny=False, dit=str(TINY_DIR / "acestep-v15-xl-turbo-tiny"), vae=None,
                           text_encoder=None, text_tokenizer=None, checkpoint_dir=str(tmp_path), lm_model=None,
                           dtype="auto", offload="auto")
    with pytest.raises(InsufficientMemoryError, match="acestep-v15-xl-turbo-tiny needs at least 12 GB"):
        model_setup.plan_from_args(args)


def test_doctor_reports_xl():
    out = subprocess.run([sys.executable, "-m", "acestep_core", "doctor", "--simulate-vram", "16", "--dit", XL,
                          "--checkpoint-dir", str(TINY_DIR), "--json"],
                         capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["xl"]["rule"] == "offload"
    assert set(report["xl"]["found"]) == {"acestep-v15-xl-turbo-tiny", "acestep-v15-xl-base-tiny"}
    assert report["decision"]["dit_is_xl"] and report["decision"]["offload_to_cpu"]
    text = subprocess.run([sys.executable, "-m", "acestep_core", "doctor", "--simulate-vram", "8"],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=120).stdout
    assert "XL DiT:    refused below 12 GB" in text
