#!/usr/bin/env bash
# Builds this JavaScript provider into a component for the `authenticator` world of
# wit/auth.wit.
#
#   ./build.sh [OUTPUT]        default: partner_token.wasm next to this script
#
# The tool is $COMPONENTIZE_JS, else ./node_modules/.bin/componentize-js (run `npm ci` here
# first; the lockfile pins it). (`cargo xtask lang` does this under target/.)
#
# The optional engine features are disabled: with them the component would import
# wasi:http, stdio, random and clocks, which a provider has no use for (and the host does
# not link wasi:http, so it would be refused at load).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/partner_token.wasm}"
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
cd "$here"
"${COMPONENTIZE_JS:-./node_modules/.bin/componentize-js}" partner-token.js \
    --wit ../../../wit --world-name authenticator \
    --disable stdio random clocks http fetch-event \
    -o "$out"
