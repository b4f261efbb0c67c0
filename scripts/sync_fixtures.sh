#!/usr/bin/env bash
# Refreshes tests/fixtures/ from the upstream fixture set (default: ../shared/fixtures beside the
# repository, or the folder given as $1) and says what changed. The upstream set grows: this is how
# new goldens come in. Without the upstream folder it does nothing: the tests only read
# tests/fixtures/, which is committed.
#
# Each file is stored once: a file whose bytes equal another fixture's becomes a relative symlink to
# the first one (in sorted path order), so the repository does not carry the same bytes twice.
set -euo pipefail
cd "$(dirname "$0")/.."
src="${1:-../shared/fixtures}"
dest="tests/fixtures"
sets=(acestep-tiny comfyui-format-tiny)

if [ ! -d "$src" ]; then
    echo "sync_fixtures: no upstream fixtures at $src; tests/fixtures/ is left as it is."
    exit 0
fi
mkdir -p "$dest"
added=0 updated=0 removed=0

# Copy new and changed files (compared by content, so a symlinked duplicate counts as unchanged).
for set in "${sets[@]}"; do
    [ -d "$src/$set" ] || continue
    while IFS= read -r -d '' file; do
        rel="${file#"$src"/}"
        target="$dest/$rel"
        if [ -e "$target" ] && cmp -s "$file" "$target"; then
            continue
        fi
        if [ -e "$target" ] || [ -L "$target" ]; then
            echo "updated  $rel"; updated=$((updated + 1)); rm -f "$target"
        else
            echo "added    $rel"; added=$((added + 1))
        fi
        mkdir -p "$(dirname "$target")"
        cp "$file" "$target"
        chmod u+w "$target"
    done < <(find "$src/$set" -type f -print0 | sort -z)
done

# Remove what the upstream set no longer has.
for set in "${sets[@]}"; do
    [ -d "$dest/$set" ] || continue
    while IFS= read -r -d '' file; do
        rel="${file#"$dest"/}"
        if [ ! -e "$src/$rel" ]; then
            echo "removed  $rel"; removed=$((removed + 1)); rm -f "$file"
        fi
    done < <(find "$dest/$set" \( -type f -o -type l \) -print0 | sort -z)
    find "$dest/$set" -type d -empty -delete
done

# Store each content once: later duplicates become relative symlinks to the first copy.
declare -A first_of
while IFS= read -r -d '' file; do
    sum=$(sha256sum "$file" | cut -d' ' -f1)
    if [ -n "${first_of[$sum]:-}" ]; then
        ln -sfr "${first_of[$sum]}" "$file"
    else
        first_of[$sum]="$file"
    fi
done < <(find "$dest" -type f -print0 | sort -z)

echo "sync_fixtures: $added added, $updated updated, $removed removed; $dest holds $(du -sh "$dest" | cut -f1)."
