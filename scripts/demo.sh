#!/usr/bin/env bash
# Sets up .venv (if needed) and makes one song.
# With real weights in ./checkpoints (or $ACESTEP_CHECKPOINTS_DIR) it makes music; without them it
# runs the tiny random-weight checkpoints to prove the install, and says so (the result is noise).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
CKPT="${ACESTEP_CHECKPOINTS_DIR:-checkpoints}"
ARGS=(--caption "upbeat electronic dance track with bright synth leads and punchy drums"
      --lyrics $'[Verse]\nLights are rising in the city\n[Chorus]\nWe dance until the morning'
      --bpm 124 --key-scale "A minor" --time-signature 4 --audio-duration 30 --seed 42
      --out outputs --audio-format flac)
if [ -d "$CKPT/acestep-v15-turbo" ]; then
    .venv/bin/python -m acestep_core generate --checkpoint-dir "$CKPT" "${ARGS[@]}" "$@"
else
    echo "No real ACE-Step 1.5 weights in $CKPT: running the TINY random-weight demo (noise, not music)." >&2
    .venv/bin/python -m acestep_core generate --tiny "${ARGS[@]}" --audio-duration 10 "$@"
fi
