#!/usr/bin/env bash
# Builds this Python provider into a component for the `authenticator` world of wit/auth.wit.
#
#   ./build.sh [OUTPUT]        default: sleeper.wasm next to this script
#
# The tool is $COMPONENTIZE_PY, else `componentize-py` on PATH. Install the pinned version:
#   python3 -m venv .venv && .venv/bin/pip install -r ../requirements.txt
#   COMPONENTIZE_PY=.venv/bin/componentize-py ./build.sh
# (`cargo xtask lang` does all of this under target/.)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/sleeper.wasm}"
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
cd "$here"
"${COMPONENTIZE_PY:-componentize-py}" --quiet -d ../../../wit -w authenticator \
    componentize app -o "$out"
