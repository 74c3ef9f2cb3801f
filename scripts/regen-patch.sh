#!/usr/bin/env bash
# Rewrites a patch file as `git diff` writes it (diff --git and index lines, function headings),
# keeping its leading description: the patch is applied with GNU patch to a scratch git repository
# holding the files it touches from SRC, and git writes the diff again.
# Usage: scripts/regen-patch.sh SRC PATCH...
set -euo pipefail
src=$(realpath "$1"); shift
for p in "$@"; do
    p=$(realpath "$p")
    tmp=$(mktemp -d)
    (
        cd "$tmp"
        git init -q . && git config user.email klpx@example.org && git config user.name klpx
        grep -E '^(---|\+\+\+) [ab]/' "$p" | sed -E 's/^(---|\+\+\+) [ab]\///; s/\t.*//' | sort -u |
        while read -r f; do
            if [ -f "$src/$f" ]; then mkdir -p "$(dirname "$f")"; cp "$src/$f" "$f"; fi
        done
        git add -A && git commit -qm base --allow-empty
        patch -s -p1 --no-backup-if-mismatch < "$p"
        git add -A
        desc=$(awk '/^(--- |diff --git )/{exit} {print}' "$p")
        { [ -n "$desc" ] && printf "%s\n\n" "$desc"; git diff --cached; } > "$p.new"
    )
    mv "$p.new" "$p"
    rm -rf "$tmp"
done
