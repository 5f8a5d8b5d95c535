#!/usr/bin/env bash
# Installs medjax into the current Python with the versions CI tested (requirements.lock),
# then the accelerator's own jaxlib plug-in at the locked jax version, so a cloud run uses
# what produced the numbers in docs/.
#
#   launch/install.sh [cpu|cuda12|cuda13|tpu] [--dry-run]
#
# PYTHON picks the interpreter (default python3; e.g. a venv's bin/python). The lock's CPU
# PyTorch (a test and benchmark peer, not a runtime dependency) is left out on cuda and
# tpu machines, where it is neither wanted nor on PyPI; cpu installs the whole lock.
set -euo pipefail

accel=cpu dry=0
for arg in "$@"; do
  case $arg in
    cpu|cuda12|cuda13|tpu) accel=$arg ;;
    --dry-run) dry=1 ;;
    *) echo "usage: $0 [cpu|cuda12|cuda13|tpu] [--dry-run]" >&2; exit 2 ;;
  esac
done
python=${PYTHON:-python3}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
lock=$repo/requirements.lock
jax_version=$(sed -n 's/^jax==\([^ ;]*\).*/\1/p' "$lock")
[[ -n $jax_version ]] || { echo "$0: no 'jax==' pin in $lock" >&2; exit 2; }

run() {
  if ((dry)); then echo "$*"; else "$@"; fi
}

requirements=$lock
if [[ $accel != cpu ]]; then
  requirements=$(mktemp)
  # A requirement starts at column 0; its hash lines are indented beneath it.
  awk '/^[^ #]/ { skip = /^torch==/ } !skip' "$lock" > "$requirements"
fi
run "$python" -m pip install -q -r "$requirements"
run "$python" -m pip install -q --no-deps --no-build-isolation -e "$repo"
if [[ $accel != cpu ]]; then
  run "$python" -m pip install -q "jax[$accel]==$jax_version"
fi
