#!/usr/bin/env bash
# Tokens issued per second over HTTP, loopback only: `portcullis serve` on its embedded demo
# (the authorization server with the `demo-agent` client), wrk (closed loop) posting
# `client_credentials` requests with HTTP Basic to /oauth/token, beside GET /healthz on the
# same gateway in the same run (the HTTP floor). Prints requests/s and the gateway's CPU
# time per request (utime + stime from /proc over the run).
#
# Run after `cargo build --release --workspace --bin portcullis`:
#   tests/load/tokens.sh            (LOAD_DURATION, LOAD_CONNECTIONS to change the run)
# Needs wrk (installed from Debian's packages if missing).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BIN="$ROOT/target/release/portcullis"
DURATION="${LOAD_DURATION:-10s}"
CONNECTIONS="${LOAD_CONNECTIONS:-32}"
PORT="${LOAD_PORT:-18931}"
WORK="$(mktemp -d /tmp/portcullis-tokens.XXXXXX)"
PID=""
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null || true; }
trap cleanup EXIT

if ! command -v wrk >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk
fi
[ -x "$BIN" ] || { echo "missing $BIN: cargo build --release --workspace --bin portcullis" >&2; exit 1; }

"$BIN" serve --listen "127.0.0.1:$PORT" --providers "$WORK/none" >"$WORK/serve.log" 2>&1 &
PID=$!
for _ in $(seq 50); do
    curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break
    sleep 0.1
done
BASIC="$(printf 'demo-agent:demo-agent-secret' | base64)"
curl -sf -H "Authorization: Basic $BASIC" -d grant_type=client_credentials \
    "http://127.0.0.1:$PORT/oauth/token" >/dev/null || { cat "$WORK/serve.log"; exit 1; }
cat >"$WORK/token.lua" <<LUA
wrk.method = "POST"
wrk.body = "grant_type=client_credentials"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic $BASIC"
LUA

cpu_ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
run() { # file, name, wrk arguments...
    local file="$WORK/$1.txt" name="$2"; shift 2
    local before after rps reqs
    before="$(cpu_ticks)"
    wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency "$@" >"$file"
    after="$(cpu_ticks)"
    rps="$(awk '/Requests\/sec/ {print $2}' "$file")"
    reqs="$(awk '/requests in/ {print $1}' "$file")"
    p99="$(awk '/ 99%/ {print $2}' "$file")"
    local hz; hz="$(getconf CLK_TCK)"
    printf '| %s | %s | %s | %.1f µs |\n' "$name" "$rps" "$p99" \
        "$(echo "($after - $before) * 1000000 / $hz / $reqs" | bc -l)"
}
echo "| case | requests/s | p99 | gateway CPU per request |"
echo "|---|---:|---:|---:|"
run healthz "GET /healthz (baseline)" "http://127.0.0.1:$PORT/healthz"
run token "POST /oauth/token (client_credentials, Basic)" -s "$WORK/token.lua" "http://127.0.0.1:$PORT/oauth/token"
