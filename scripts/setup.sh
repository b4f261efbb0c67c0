#!/usr/bin/env bash
# Creates .venv with everything the engine, the tests and the benchmarks need.
# torch is pinned to a release that runs on CPU-only machines as well as CUDA ones.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.11.0" "torchaudio==2.11.0"
.venv/bin/python -m pip install -q -e ".[test]"
