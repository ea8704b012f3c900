#!/usr/bin/env bash
# Hot-reload latency: time from writing a new component into the providers directory to the
# first request answered by it (debounce included), over several swaps of version-probe
# v1 <-> v2; and throughput under `wrk` with and without a swap every 200 ms.
#
# Run: `cargo xtask reload-bench` (builds the release binary and both probe versions first).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BIN="$ROOT/target/release/portcullis"
V1="$ROOT/target/guests/wasm32-wasip2/release/version_probe.wasm"
V2="$ROOT/target/guests-v2/wasm32-wasip2/release/version_probe.wasm"
SWAPS="${RELOAD_SWAPS:-20}"
WORK="$(mktemp -d /tmp/portcullis-reload.XXXXXX)"
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT
for f in "$BIN" "$V1" "$V2"; do [ -f "$f" ] || { echo "missing $f" >&2; exit 1; }; done

mkdir -p "$WORK/providers"
cp "$V1" "$WORK/providers/probe.wasm"
cat > "$WORK/portcullis.toml" <<TOML
[server]
listen = "127.0.0.1:18390"
public_url = "http://127.0.0.1:18390"
providers_dir = "providers"
trusted_proxies = ["127.0.0.1/32"]

[[routes]]
path = "/api"
upstream = "http://127.0.0.1:9"
mcp = false
chain = ["probe"]

[providers.probe]
type = "wasm"
component = "probe"
TOML
RUST_LOG=warn "$BIN" serve --config "$WORK/portcullis.toml" > "$WORK/gateway.log" 2>&1 &
PIDS+=($!)
version() {
    curl -s -o /dev/null -D - -H 'X-Forwarded-Uri: /api/x' -H 'X-Forwarded-Method: GET' \
        http://127.0.0.1:18390/check | tr -d '\r' | awk -F': ' 'tolower($1) == "x-portcullis-subject" {print $2}'
}
for _ in $(seq 1 200); do [ -n "$(version)" ] && break; sleep 0.05; done
[ "$(version)" = v1 ] || { echo "gateway did not come up with v1; see $WORK/gateway.log" >&2; exit 1; }

now_ms() { date +%s%3N; }
LAT=()
want=v2
for _ in $(seq 1 "$SWAPS"); do
    src=$([ $want = v2 ] && echo "$V2" || echo "$V1")
    cp "$src" "$WORK/providers/.probe.tmp"
    start=$(now_ms)
    mv "$WORK/providers/.probe.tmp" "$WORK/providers/probe.wasm"
    until [ "$(version)" = $want ]; do
        [ $(( $(now_ms) - start )) -gt 10000 ] && { echo "swap to $want not seen in 10 s" >&2; exit 1; }
    done
    LAT+=($(( $(now_ms) - start )))
    want=$([ $want = v2 ] && echo v1 || echo v2)
done
printf '%s\n' "${LAT[@]}" | sort -n > "$WORK/latencies"
n=${#LAT[@]}
p50=$(sed -n "$(( (n + 1) / 2 ))p" "$WORK/latencies")
max=$(tail -1 "$WORK/latencies")
echo "write-to-serving over $n swaps: p50 ${p50} ms, max ${max} ms"

url_args=(-H 'X-Forwarded-Uri: /api/x' -H 'X-Forwarded-Method: GET' http://127.0.0.1:18390/check)
quiet=$(wrk -t1 -c16 -d5s "${url_args[@]}" | awk '/Requests\/sec/ {print $2}')
( for _ in $(seq 1 25); do
      cp "$V2" "$WORK/providers/.p"; mv "$WORK/providers/.p" "$WORK/providers/probe.wasm"; sleep 0.2
      cp "$V1" "$WORK/providers/.p"; mv "$WORK/providers/.p" "$WORK/providers/probe.wasm"; sleep 0.2
  done ) &
SWAPPER=$!
busy=$(wrk -t1 -c16 -d5s "${url_args[@]}" > "$WORK/busy.wrk"; awk '/Requests\/sec/ {print $2}' "$WORK/busy.wrk")
kill $SWAPPER 2>/dev/null || true
errors=$(grep -c "Non-2xx" "$WORK/busy.wrk" || true)
echo "throughput: ${quiet} req/s without swaps, ${busy} req/s with a swap every 200 ms ($(awk -v a="$busy" -v b="$quiet" 'BEGIN {printf "%.2f", a / b}')x); non-2xx lines: ${errors}"
