"""What a new user meets first: --tiny with nothing installed beside the package, the CLI's field
names, and progress output."""

import io
import json
import subprocess
import sys

import pytest
import torch

from conftest import REPO_ROOT, TINY_DIR

from acestep_core.audio_io import load_audio
from acestep_core.cli import build_parser, main
from acestep_core.cli.progress import StageProgress
from acestep_core.lm.constants import AUDIO_CODE_BASE, IM_END_ID, THINK_END_ID, THINK_ID
from acestep_core.tiny import QWEN_SPECIAL_TOKENS, build_tiny_checkpoints

LM = TINY_DIR / "acestep-5Hz-lm-tiny"


@pytest.fixture(scope="module")
def random_set(tmp_path_factory):
    return build_tiny_checkpoints(tmp_path_factory.mktemp("cache") / "tiny")


@pytest.fixture
def no_fixtures(monkeypatch, random_set):
    """A user's machine: no ACESTEP_TINY_DIR, the cache holding the random set."""
    monkeypatch.delenv("ACESTEP_TINY_DIR", raising=False)
    monkeypatch.setattr("acestep_core.tiny._cache_dir", lambda: random_set["dit"].parent)


def test_random_lm_has_the_real_token_ids(random_set):
    from acestep_core.lm.tokenizer import LMTokenizer

    tok = LMTokenizer(random_set["lm"])
    assert len(tok) == 217204
    assert tok.encode("<|audio_code_0|><|audio_code_63999|>") == [AUDIO_CODE_BASE, AUDIO_CODE_BASE + 63999]
    assert tok.encode("<think></think><|im_end|>") == [THINK_ID, THINK_END_ID, IM_END_ID]
    for token, token_id in QWEN_SPECIAL_TOKENS.items():
        assert tok.encode(token) == [token_id]
    # every id decodes, and text round-trips through the byte-level BPE
    assert len(tok.token_texts) == 217204 and tok.decode(tok.encode("bpm: 120\nÄé")) == "bpm: 120\nÄé"
    config = json.loads((random_set["lm"] / "config.json").read_text())
    assert config["vocab_size"] == 217204 and config["eos_token_id"] == IM_END_ID


def test_build_is_reused_and_atomic(random_set):
    before = {p: (p / "config.json").stat().st_mtime_ns for p in random_set.values()}
    again = build_tiny_checkpoints(random_set["dit"].parent)
    assert again == random_set
    assert {p: (p / "config.json").stat().st_mtime_ns for p in again.values()} == before
    assert not [p for p in random_set["dit"].parent.parent.iterdir() if p.name.startswith(".")]  # no scratch left


def test_generate_tiny_without_fixtures_writes_audible_noise(tmp_path, no_fixtures, capsys):
    out = tmp_path / "out"
    assert main(["generate", "--tiny", "--caption", "x", "--audio-duration", "10", "--seed", "3",
                 "--out", str(out), "--audio-format", "wav"]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("TINY RANDOM-WEIGHT") == 1 and "TINY RANDOM-WEIGHT" in captured.out
    (song,) = out.glob("*.wav")
    audio = load_audio(song)
    assert audio.shape == (2, 480000) and torch.isfinite(audio).all()
    assert audio.std() > 1e-3  # noise, not a silent file
    params = json.loads(song.with_suffix(".json").read_text())
    assert "acestep-v15-turbo" in params["checkpoints"]["dit"] and "TINY" in params["note"]


def test_think_tiny_and_generate_tiny_thinking_without_fixtures(tmp_path, no_fixtures, capsys):
    metas = ["--bpm", "100", "--key-scale", "C major", "--time-signature", "4", "--audio-duration", "10",
             "--lm-temperature", "0"]
    assert main(["think", "--tiny", "--caption", "x", "--json", *metas]) == 0
    captured = capsys.readouterr()
    plan = json.loads(captured.out)
    assert len(plan["audio_codes"]) == 50 and all(0 <= c < 64000 for c in plan["audio_codes"])
    assert "TINY RANDOM-WEIGHT" in captured.err

    out = tmp_path / "out"
    assert main(["generate", "--tiny", "--thinking", "--caption", "x", "--out", str(out), "--seed", "1",
                 "--inference-steps", "2", *metas]) == 0
    (meta,) = out.glob("*.json")
    params = json.loads(meta.read_text())
    assert params["plan"]["audio_codes"] == plan["audio_codes"]  # same LM, same greedy plan
    assert params["audio_code_count"] == 50


def test_lm_commands_take_the_official_field_names(tiny_dir, capsys):
    lm = ["--lm-model", str(LM), "--lm-temperature", "0", "--lm-cfg-scale", "1", "--lm-seed", "7", "--json",
          "--caption", "a song"]
    assert main(["think", *lm, "--bpm", "96", "--key-scale", "D minor", "--time-signature", "3",
                 "--audio-duration", "7", "--vocal-language", "en"]) == 0
    official = json.loads(capsys.readouterr().out)
    # the older spellings still work, as hidden aliases
    assert main(["think", *lm, "--bpm", "96", "--keyscale", "D minor", "--timesignature", "3",
                 "--duration", "7", "--language", "en"]) == 0
    assert json.loads(capsys.readouterr().out) == official
    assert official["keyscale"] == "D minor" and official["duration"] == 7 and len(official["audio_codes"]) == 35

    parser = build_parser()
    for command in ("think", "format"):
        help_text = parser._subparsers._group_actions[0].choices[command].format_help()
        for name in ("--key-scale", "--time-signature", "--audio-duration", "--vocal-language", "--tiny"):
            assert name in help_text
        for alias in ("--keyscale", "--timesignature", "--duration ", "--language "):
            assert alias not in help_text
    sample_help = parser._subparsers._group_actions[0].choices["sample"].format_help()
    assert "--vocal-language" in sample_help and "--language " not in sample_help


def test_progress_prints_one_line_per_stage_off_a_terminal():
    stream = io.StringIO()
    progress = StageProgress("diffusion", "steps", stream=stream)
    for run in range(2):
        for step in range(1, 9):
            progress(step, 8)
    lm = StageProgress("LM", "tokens", stream=stream)
    for step in range(1, 40):
        lm(step, 3500)
    lm(39, 39)  # the phase stopped early
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("diffusion: 8 steps in ") and lines[1].startswith("diffusion: 8 steps in ")
    assert lines[2].startswith("LM: 39 tokens in ")


def test_progress_draws_a_bar_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    progress = StageProgress("VAE decode", "tiles", stream=stream)
    for tile in range(1, 4):
        progress(tile, 3)
    text = stream.getvalue()
    assert "VAE decode" in text and "3/3" in text and "100%" in text


def test_generate_reports_each_stage_in_logs(tmp_path):
    """A non-terminal stderr (a log file) gets readable per-stage lines, not run-together counters."""
    env = {"ACESTEP_TINY_DIR": str(TINY_DIR), "PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "acestep_core", "generate", "--tiny", "--caption", "x",
                           "--audio-duration", "10", "--out", str(tmp_path), "--seed", "1"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert any(line.startswith("diffusion: 8 steps in ") for line in lines)
    assert any(line.startswith("VAE decode: 1 tiles in ") for line in lines)
    assert "diffusion step" not in proc.stderr
