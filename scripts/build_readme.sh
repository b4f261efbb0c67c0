#!/usr/bin/env bash
# README.md is assembled from one section file per area (docs/readme/); edit those, then run this.
set -euo pipefail
cd "$(dirname "$0")/.."
parts=(00-head engine lm comfyui server memory audio limits 90-tail)
{
    for p in "${parts[@]}"; do
        cat "docs/readme/$p.md"
        echo
    done
} > README.md
