#!/bin/sh
# FAKE scripts/kconfig/merge_config.sh for thpvm's unit tests: supports the one
# form kernel.py uses, `merge_config.sh -m -O DIR BASE FRAGMENT...`, and writes
# BASE followed by every fragment to DIR/.config (olddefconfig resolves repeats).
set -e
OUTPUT=.
MERGE_ONLY=
while [ $# -gt 0 ]; do
    case "$1" in
        -m) MERGE_ONLY=1; shift ;;
        -O) OUTPUT=$2; shift 2 ;;
        -*) echo "fake merge_config.sh: unsupported option $1" >&2; exit 1 ;;
        *) break ;;
    esac
done
if [ -z "$MERGE_ONLY" ] || [ $# -lt 1 ]; then
    echo "usage: merge_config.sh -m -O DIR BASE FRAGMENT... (fake: -m only)" >&2
    exit 1
fi
echo "merge_config O=$OUTPUT" >> "${FAKE_MAKE_LOG:-/dev/null}"
BASE=$1
shift
TMP=$(mktemp)
cat "$BASE" > "$TMP"
for f in "$@"; do
    if [ ! -r "$f" ]; then
        echo "The merge file '$f' does not exist.  Exit." >&2
        rm -f "$TMP"
        exit 1
    fi
    echo "Merging $f"
    cat "$f" >> "$TMP"
    echo >> "$TMP"
done
mv "$TMP" "$OUTPUT/.config"
