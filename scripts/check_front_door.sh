#!/usr/bin/env bash
# What a new user does: clone the repository into an empty folder (nothing beside it), run the
# README's demo command there, and check that a decodable song of the requested length appears.
# Uses a fresh cache folder, so the tiny random checkpoints are built from nothing.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
git clone -q "$repo" "$work/clone"
cd "$work/clone"
started=$(date +%s)
XDG_CACHE_HOME="$work/cache" bash scripts/demo.sh > "$work/demo.log" 2>&1 || { cat "$work/demo.log"; exit 1; }
echo "front door: demo finished in $(( $(date +%s) - started )) s in a bare clone"
grep -q "TINY RANDOM-WEIGHT" "$work/demo.log" || { echo "front door: the demo did not say it used random weights"; exit 1; }
.venv/bin/python - <<'PY'
import sys
from pathlib import Path

from acestep_core.audio_io import load_audio

songs = sorted(Path("outputs").glob("*.flac"))
if len(songs) != 1:
    sys.exit(f"front door: expected one song in outputs/, found {[p.name for p in songs]}")
audio = load_audio(songs[0])
seconds = audio.shape[-1] / 48000
if audio.shape[0] != 2 or abs(seconds - 10.0) > 0.05 or not bool(audio.isfinite().all()):
    sys.exit(f"front door: {songs[0].name} is {tuple(audio.shape)} ({seconds:.2f} s), expected 10 s stereo")
print(f"front door: {songs[0].name} decodes to {seconds:.2f} s of stereo audio")
PY
