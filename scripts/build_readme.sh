#!/usr/bin/env bash
# README.md is assembled from one section file per area (docs/readme/); edit those, then run this.
set -euo pipefail
cd "$(dirname "$0")/.."
parts=(00-head engine parameters lm comfyui server adapters memory performance audio limits 90-tail)
python="python3"
[ -x .venv/bin/python ] && python=.venv/bin/python
# The parameter table is generated from the schema, so it cannot drift from the code.
table=$(PYTHONPATH=. "$python" -c "from acestep_core.schema import markdown_table; print(markdown_table(), end='')")
marker="<!-- parameter table: generated from acestep_core/schema.py by scripts/build_readme.sh -->"
{
    awk -v m="$marker" '{print} $0 == m {exit}' docs/readme/parameters.md
    echo
    printf '%s\n' "$table"
} > docs/readme/parameters.md.new
mv docs/readme/parameters.md.new docs/readme/parameters.md
{
    for p in "${parts[@]}"; do
        cat "docs/readme/$p.md"
        echo
    done
} > README.md
