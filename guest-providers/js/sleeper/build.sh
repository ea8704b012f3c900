#!/usr/bin/env bash
# Builds the sleeper fixture into a component for the `authenticator` world of wit/auth.wit.
#
#   ./build.sh [OUTPUT]        default: sleeper.wasm next to this script
#
# The tool is $COMPONENTIZE_JS, else the one `npm ci` installed for partner-token
# (../partner-token/node_modules/.bin/componentize-js). (`cargo xtask lang` does this under
# target/.)
#
# Unlike partner-token, the `clocks` feature stays on: `setTimeout` needs it (it imports
# wasi:clocks/monotonic-clock and wasi:io/poll, which the host links). stdio, random, http
# and fetch-event are off, as there.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/sleeper.wasm}"
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
cd "$here"
"${COMPONENTIZE_JS:-../partner-token/node_modules/.bin/componentize-js}" sleeper.js \
    --wit ../../../wit --world-name authenticator \
    --disable stdio random http fetch-event \
    -o "$out"
