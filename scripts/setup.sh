#!/usr/bin/env bash
# Idempotent host set-up: Debian packages (as root or through sudo), then the project venv.
# Usage: scripts/setup.sh VENV_DIR [run|test]
#   run  (default): what `make vm-test` needs (scripts/apt-packages.txt)
#   test          : also what only `make test` needs (scripts/apt-packages-test.txt)
# Packages are installed with --no-install-recommends; apt/dpkg output goes to a log file
# under the thpvm cache and only a few progress lines are printed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv=${1:-.venv}
profile=${2:-run}

lists=("$here/apt-packages.txt")
[ "$profile" = test ] && lists+=("$here/apt-packages-test.txt")
wanted=$(cat "${lists[@]}" | sed -e 's/#.*//' | tr -s ' \t' '\n' | grep -v '^$' || true)
missing=()
for p in $wanted; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

cache=${THPVM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/thpvm}
mkdir -p "$cache" && chmod 700 "$cache"
log="$cache/setup-apt.log"
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo); fi
  echo "setup: installing ${#missing[@]} Debian packages (${profile}); apt log: $log"
  echo "setup: ${missing[*]}"
  apt_env=(env DEBIAN_FRONTEND=noninteractive)
  if ! "${sudo[@]}" "${apt_env[@]}" apt-get update -q >>"$log" 2>&1; then
    echo "setup: apt-get update failed; last lines of $log:" >&2; tail -20 "$log" >&2; exit 1
  fi
  if ! "${sudo[@]}" "${apt_env[@]}" apt-get install -y -q --no-install-recommends \
      "${missing[@]}" >>"$log" 2>&1; then
    echo "setup: apt-get install failed; last lines of $log:" >&2; tail -20 "$log" >&2; exit 1
  fi
  echo "setup: $(grep -c '^Setting up ' "$log" || true) packages set up so far (see $log)"
fi

stamp="$venv/.thpvm-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: creating venv $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip >>"$log" 2>&1
  "$venv/bin/pip" install -q -e '.[test]'
  touch "$stamp"
fi
