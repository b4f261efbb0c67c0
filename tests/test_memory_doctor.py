"""`python -m acestep_core doctor`: device, decision and checkpoints, as text and as JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


from acestep_core.cli import main
from acestep_core.memory.inventory import available_lm_sizes, scan_checkpoint_dir, scan_comfy_models

REPO_ROOT = Path(__file__).resolve().parent.parent


def run_doctor(capsys, *args) -> dict:
    assert main(["doctor", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def make_official_layout(root: Path) -> Path:
    """Official folder names with the files the loader needs (empty: the doctor does not load them)."""
    layout = {
        "acestep-v15-turbo": ["config.json", "model.safetensors", "silence_latent.pt"],
        "acestep-v15-xl-turbo": ["config.json", "model.safetensors.index.json", "silence_latent.pt"],
        "vae": ["config.json", "diffusion_pytorch_model.safetensors"],
        "Qwen3-Embedding-0.6B": ["config.json", "model.safetensors", "tokenizer.json"],
        "acestep-5Hz-lm-0.6B": ["config.json", "model.safetensors", "tokenizer.json"],
        "acestep-5Hz-lm-1.7B": ["config.json", "tokenizer.json"],  # weights still downloading
        "unrelated-folder": ["config.json"],
    }
    for folder, files in layout.items():
        (root / folder).mkdir(parents=True)
        for name in files:
            (root / folder / name).write_bytes(b"x" * 10)
    return root


def test_simulated_card_json(capsys, tmp_path):
    ckpt = make_official_layout(tmp_path / "checkpoints")
    report = run_doctor(capsys, "--simulate-vram", "16", "--checkpoint-dir", str(ckpt))
    assert report["device"]["simulated"] and report["device"]["total_gb"] == 16.0
    decision = report["decision"]
    # 16 GB recommends the 1.7B LM, but its weights are missing: the 0.6B on disk is used instead.
    assert (decision["tier"], decision["lm_model"], decision["init_lm"]) == ("tier6a", "0.6B", True)
    assert any("not in the checkpoint folder" in r for r in decision["reasons"])
    found = {c["name"]: c for c in report["checkpoints"]}
    assert set(found) == {"acestep-v15-turbo", "acestep-v15-xl-turbo", "vae", "Qwen3-Embedding-0.6B",
                          "acestep-5Hz-lm-0.6B", "acestep-5Hz-lm-1.7B"}
    assert found["acestep-v15-xl-turbo"]["complete"] and found["acestep-v15-xl-turbo"]["kind"] == "dit"
    lm17 = found["acestep-5Hz-lm-1.7B"]
    assert not lm17["complete"] and lm17["missing"] == ["model.safetensors or model.safetensors.index.json"]
    assert (found["Qwen3-Embedding-0.6B"]["kind"], found["acestep-5Hz-lm-0.6B"]["lm_size"]) == ("text_encoder", "0.6B")


def test_tiny_fixtures_and_comfy_files(capsys, tiny_dir, comfy_tiny_dir):
    report = run_doctor(capsys, "--simulate-vram", "24", "--checkpoint-dir", str(tiny_dir),
                        "--comfy-models", str(comfy_tiny_dir))
    kinds = sorted(c["kind"] for c in report["checkpoints"])
    assert kinds == ["dit"] * 4 + ["lm", "text_encoder", "vae"]  # 2B and XL, turbo and base
    comfy = {Path(c["name"]).name: c for c in report["comfy_files"]}
    assert comfy["acestep_v1.5_turbo.safetensors"]["kind"] == "dit"
    assert comfy["qwen_0.6b_ace15.safetensors"]["kind"] == "text_encoder"  # the embedding model, not an LM
    assert (comfy["qwen_1.7b_ace15.safetensors"]["kind"], comfy["qwen_1.7b_ace15.safetensors"]["lm_size"]) == ("lm", "1.7B")
    assert comfy["ace_step_1.5_turbo_aio.safetensors"]["kind"] == "all_in_one"
    assert report["decision"]["lm_model"] == "1.7B" and report["decision"]["init_lm"]


def test_requested_lm_and_env_overrides(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("ACESTEP_OFFLOAD_TO_CPU", "0")
    report = run_doctor(capsys, "--simulate-vram", "8", "--lm", "4B", "--checkpoint-dir", str(tmp_path / "none"))
    d = report["decision"]
    assert (d["lm_model"], d["offload_to_cpu"], d["offload_dit_to_cpu"]) == ("0.6B", False, False)
    assert any("cannot hold" in r for r in d["reasons"])
    assert not report["checkpoint_dir_exists"]


def test_checkpoint_dir_from_env(capsys, tmp_path, monkeypatch):
    ckpt = make_official_layout(tmp_path / "elsewhere")
    monkeypatch.setenv("ACESTEP_CHECKPOINTS_DIR", str(ckpt))
    monkeypatch.setenv("ACESTEP_CPU_BF16", "0")  # the old behaviour, whatever this CPU can do
    report = run_doctor(capsys, "--device", "cpu")
    assert report["checkpoint_dir"] == str(ckpt) and len(report["checkpoints"]) == 6
    assert report["device"]["device_type"] == "cpu" and report["decision"]["dtype"] == "float32"
    assert any("ACESTEP_CPU_BF16=0" in r for r in report["decision"]["reasons"])


def test_text_output_shows_device_decision_reasons_and_checkpoints(capsys, tmp_path):
    ckpt = make_official_layout(tmp_path / "checkpoints")
    assert main(["doctor", "--simulate-vram", "4", "--checkpoint-dir", str(ckpt)]) == 0
    out = capsys.readouterr().out
    assert "Device:" in out and "simulated" in out and "4.00 GB total" in out
    assert "tier1" in out and "offload CPU+DiT" in out and "Why:" in out
    assert "acestep-5Hz-lm-1.7B" in out and "INCOMPLETE" in out


def test_bad_arguments_give_one_line_errors(capsys, tmp_path):
    assert main(["doctor", "--simulate-vram", "-2"]) == 2
    assert "positive" in capsys.readouterr().err
    assert main(["doctor", "--comfy-models", str(tmp_path / "missing")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_module_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "acestep_core", "doctor", "--json", "--simulate-vram", "12",
                          "--checkpoint-dir", "/nonexistent"], capture_output=True, text=True, cwd=REPO_ROOT)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["decision"]["tier"] == "tier4"


def test_inventory_helpers(tiny_dir, comfy_tiny_dir, tmp_path):
    assert scan_checkpoint_dir(tmp_path / "missing") == []
    assert available_lm_sizes(scan_checkpoint_dir(make_official_layout(tmp_path / "c"))) == ["0.6B"]
    assert available_lm_sizes(scan_comfy_models(comfy_tiny_dir)) == ["1.7B"]
    assert all(c.complete for c in scan_checkpoint_dir(tiny_dir))
