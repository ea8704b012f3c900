#!/usr/bin/env bash
# Load harness, all in one run, loopback only:
# 1. Saturation (wrk, closed loop): requests/s, latency and CPU per request through nginx
#    `proxy_pass` (keepalive upstream), a bare hyper proxy (the floor of the stack the
#    gateway is built on), and the gateway with auth off (an `anonymous` provider), an API
#    key, an RS256 JWT presented again and again (what an MCP client does: the
#    verified-token cache answers), an RS256 JWT verified on every request
#    (`token_cache_size = 0`), and the Wasm partner-token provider.
# 2. JWT cost at a fixed rate (h2load --rps, open loop): CPU per request with auth off and
#    with both JWT gateways at the same request rate, so that the difference is the JWT
#    work alone (at saturation a slower case also batches fewer requests per wake-up, which
#    adds kernel time that is not the auth's), beside a bare ring RS256 verify of the same
#    token measured in this run (`verify_rs256`), alone and under the same load.
#
# Run: `cargo xtask load` (builds the release binaries and the guests, then runs this).
# Needs nginx, wrk, h2load and openssl (installed from Debian's packages if missing).
# Results: Markdown tables on stdout; raw tool output in $WORK.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BIN="$ROOT/target/release/portcullis"
BARE="$ROOT/target/release/examples/bare_proxy"
VERIFY="$ROOT/target/release/examples/verify_rs256"
WASM="$ROOT/target/guests/wasm32-wasip2/release/partner_token.wasm"
DURATION="${LOAD_DURATION:-10s}"
CONNECTIONS="${LOAD_CONNECTIONS:-32}"
RATE_CLIENTS="${LOAD_RATE_CLIENTS:-12}"
RATE_PER_CLIENT="${LOAD_RATE_PER_CLIENT:-500}"
WORK="$(mktemp -d /tmp/portcullis-load.XXXXXX)"
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

for tool in nginx wrk h2load openssl; do
    if ! command -v "$tool" >/dev/null; then
        case $tool in nginx) package=nginx-light ;; h2load) package=nghttp2-client ;; *) package=$tool ;; esac
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package"
    fi
done
[ -x "$BIN" ] || { echo "missing $BIN: run cargo xtask load" >&2; exit 1; }
[ -x "$BARE" ] || { echo "missing $BARE: run cargo xtask load" >&2; exit 1; }
[ -x "$VERIFY" ] || { echo "missing $VERIFY: run cargo xtask load" >&2; exit 1; }

UPSTREAM=18181 NGINX_PROXY=18182
cat > "$WORK/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    upstream backend { server 127.0.0.1:$UPSTREAM; keepalive 64; }
    server {
        listen 127.0.0.1:$UPSTREAM;
        location / { default_type application/json; return 200 '{"jsonrpc":"2.0","id":1,"result":{}}'; }
    }
    server {
        listen 127.0.0.1:$NGINX_PROXY;
        location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
}
NGINX
nginx -c "$WORK/nginx.conf" -p "$WORK" &
PIDS+=($!)

# An RS256 key, its JWKS and a token, with openssl only.
b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }
openssl genrsa -out "$WORK/jwt.pem" 2048 2>/dev/null
N=$(openssl rsa -in "$WORK/jwt.pem" -noout -modulus | cut -d= -f2 | xxd -r -p | b64url)
JWKS="{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"load\",\"alg\":\"RS256\",\"use\":\"sig\",\"n\":\"$N\",\"e\":\"AQAB\"}]}"
NOW=$(date +%s)
HEADER=$(printf '{"alg":"RS256","typ":"JWT","kid":"load"}' | b64url)
CLAIMS=$(printf '{"iss":"https://idp.load.test","aud":"http://127.0.0.1:18190/api","sub":"load","scope":"api","exp":%d}' $((NOW + 3600)) | b64url)
SIG=$(printf '%s.%s' "$HEADER" "$CLAIMS" | openssl dgst -sha256 -sign "$WORK/jwt.pem" -binary | b64url)
TOKEN="$HEADER.$CLAIMS.$SIG"

mkdir -p "$WORK/providers" && cp "$WASM" "$WORK/providers/partner-token.wasm"
SECRET_HASH=$(printf %s load-secret | sha256sum | cut -d' ' -f1)
echo "load:sha256:$SECRET_HASH:api" > "$WORK/partner.creds"
KEY_HASH="sha256:$(printf %s load-key-0123456789 | sha256sum | cut -d' ' -f1)"

gateway() { # name port chain-provider-table
    local name=$1 port=$2 provider=$3
    cat > "$WORK/$name.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
public_url = "http://127.0.0.1:18190"
providers_dir = "providers"
log_format = "text"

[[routes]]
path = "/api"
upstream = "http://127.0.0.1:$UPSTREAM"
mcp = false
chain = ["p"]

[providers.p]
$provider
TOML
    RUST_LOG=warn "$BIN" serve --config "$WORK/$name.toml" > "$WORK/$name.log" 2>&1 &
    PIDS+=($!)
    eval "PID_$name=$!"
}
gateway off 18190 'type = "anonymous"
scopes = ["api"]'
gateway api_key 18191 "type = \"api_key\"
keys = [{ name = \"load\", hash = \"$KEY_HASH\", scopes = [\"api\"] }]"
gateway jwt 18192 "type = \"jwt\"
issuer = \"https://idp.load.test\"
audience = [\"http://127.0.0.1:18190/api\", \"http://127.0.0.1:18192/api\"]
jwks = '$JWKS'"
gateway jwt_verify 18194 "type = \"jwt\"
issuer = \"https://idp.load.test\"
audience = [\"http://127.0.0.1:18190/api\"]
jwks = '$JWKS'
token_cache_size = 0"
gateway wasm 18193 'type = "wasm"
component = "partner-token"
secrets = { credentials = "file://'"$WORK"'/partner.creds" }'

# The floor: the same HTTP stack (hyper-util server and pooled client) with nothing else.
"$BARE" 127.0.0.1:18189 "http://127.0.0.1:$UPSTREAM" > "$WORK/bare.log" 2>&1 &
PIDS+=($!)
PID_bare=$!

wait_up() {
    for _ in $(seq 1 200); do
        curl -s -o /dev/null "http://127.0.0.1:$1/healthz" 2>/dev/null && return 0
        curl -s -o /dev/null "http://127.0.0.1:$1/" 2>/dev/null && [ "$1" = $NGINX_PROXY ] && return 0
        sleep 0.05
    done
    echo "port $1 did not come up; logs in $WORK" >&2; exit 1
}
for port in $NGINX_PROXY 18190 18191 18192 18193 18194; do wait_up $port; done
for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:18189/" && break; sleep 0.05; done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
nginx_ticks() { local t=0; for p in $(pgrep -f "nginx: worker process" ); do t=$((t + $(cpu_ticks "$p"))); done; echo $t; }
HZ=$(getconf CLK_TCK)

echo "| case | requests/s | p50 | p99 | CPU µs/request (server) | vs auth off | vs nginx |"
echo "|---|---:|---:|---:|---:|---:|---:|"
declare -A RPS
run() { # name port header
    local name=$1 port=$2 header=$3 before after
    local url="http://127.0.0.1:$port/api/x"
    local status; status=$(curl -s -o /dev/null -w '%{http_code}' -H "$header" "$url")
    [ "$status" = 200 ] || { echo "$name answered $status, not 200; logs in $WORK" >&2; exit 1; }
    wrk -t1 -c"$CONNECTIONS" -d2s -H "$header" "$url" > /dev/null # warm-up
    if [ "$name" = nginx ]; then before=$(nginx_ticks); else before=$(cpu_ticks "$(eval echo \$PID_$name)"); fi
    wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency -H "$header" "$url" > "$WORK/$name.wrk"
    if [ "$name" = nginx ]; then after=$(nginx_ticks); else after=$(cpu_ticks "$(eval echo \$PID_$name)"); fi
    local rps total p50 p99 cpu
    rps=$(awk '/Requests\/sec/ {print $2}' "$WORK/$name.wrk")
    total=$(awk '/requests in/ {print $1}' "$WORK/$name.wrk")
    p50=$(awk '$1 == "50%" {print $2}' "$WORK/$name.wrk")
    p99=$(awk '$1 == "99%" {print $2}' "$WORK/$name.wrk")
    grep -q "Non-2xx" "$WORK/$name.wrk" && { echo "$name: non-2xx answers under load" >&2; exit 1; }
    cpu=$(awk -v t=$((after - before)) -v hz="$HZ" -v n="$total" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')
    RPS[$name]=$rps
    local off=${RPS[off]:-$rps} ng=${RPS[nginx]:-$rps}
    printf '| %s | %.0f | %s | %s | %s | %.2f× | %.2f× |\n' "$name" "$rps" "$p50" "$p99" "$cpu" \
        "$(awk -v a="$rps" -v b="$off" 'BEGIN {print a / b}')" "$(awk -v a="$rps" -v b="$ng" 'BEGIN {print a / b}')"
}
run nginx $NGINX_PROXY "X-Nothing: 1"
run off 18190 "X-Nothing: 1"
run bare 18189 "X-Nothing: 1"
run api_key 18191 "Authorization: Bearer load-key-0123456789"
run jwt 18192 "Authorization: Bearer $TOKEN"
run jwt_verify 18194 "Authorization: Bearer $TOKEN"
run wasm 18193 "Authorization: partner-token load:load-secret"
echo
echo "wrk: 1 thread, $CONNECTIONS connections, $DURATION per case, keep-alive; raw output in $WORK"

# 2. The same request rate for every case: CPU per request then differs only by the work.
RATE=$((RATE_CLIENTS * RATE_PER_CLIENT))
echo
echo "| case at $RATE requests/s | requests | CPU µs/request (server) | added over auth off | user CPU µs/request | added user CPU |"
echo "|---|---:|---:|---:|---:|---:|"
declare -A FIXED FIXED_USER
user_ticks() { awk '{print $14}' "/proc/$1/stat"; }
fixed() { # name port header
    local name=$1 port=$2 header=$3 before after user_before user_after done_count cpu user
    h2load --h1 -c"$RATE_CLIENTS" --rps="$RATE_PER_CLIENT" -D 2 -H "$header" \
        "http://127.0.0.1:$port/api/x" > /dev/null # warm-up
    before=$(cpu_ticks "$(eval echo \$PID_$name)")
    user_before=$(user_ticks "$(eval echo \$PID_$name)")
    h2load --h1 -c"$RATE_CLIENTS" --rps="$RATE_PER_CLIENT" -D "${DURATION%s}" -H "$header" \
        "http://127.0.0.1:$port/api/x" > "$WORK/$name.h2load"
    after=$(cpu_ticks "$(eval echo \$PID_$name)")
    user_after=$(user_ticks "$(eval echo \$PID_$name)")
    done_count=$(awk '/^requests:/ {print $8}' "$WORK/$name.h2load")
    grep -q "status codes: $done_count 2xx" "$WORK/$name.h2load" \
        || { echo "$name: non-2xx answers at the fixed rate; see $WORK/$name.h2load" >&2; exit 1; }
    cpu=$(awk -v t=$((after - before)) -v hz="$HZ" -v n="$done_count" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')
    user=$(awk -v t=$((user_after - user_before)) -v hz="$HZ" -v n="$done_count" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')
    FIXED[$name]=$cpu
    FIXED_USER[$name]=$user
    printf '| %s | %s | %s | %s | %s | %s |\n' "$name" "$done_count" "$cpu" \
        "$(awk -v a="$cpu" -v b="${FIXED[off]:-$cpu}" 'BEGIN {printf "%+.1f µs", a - b}')" "$user" \
        "$(awk -v a="$user" -v b="${FIXED_USER[off]:-$user}" 'BEGIN {printf "%+.1f µs", a - b}')"
}
fixed off 18190 "x-nothing: 1"
fixed jwt 18192 "authorization: Bearer $TOKEN"
fixed jwt_verify 18194 "authorization: Bearer $TOKEN"
# The bare verify alone on an idle machine runs faster than the same instructions inside a
# loaded server (the two vCPUs share execution resources), so it is also measured while
# the auth-off gateway serves the same fixed-rate load: the like-for-like baseline.
VERIFY_US=$("$VERIFY" "$N" "$TOKEN" 3 | sed 's/.*cpu_us_per_verify=//')
h2load --h1 -c"$RATE_CLIENTS" --rps="$RATE_PER_CLIENT" -D 5 -H "x-nothing: 1" \
    "http://127.0.0.1:18190/api/x" > "$WORK/verify-background.h2load" &
H2LOAD=$!
sleep 1
VERIFY_LOADED_US=$("$VERIFY" "$N" "$TOKEN" 3 | sed 's/.*cpu_us_per_verify=//')
wait "$H2LOAD"
echo
echo "Bare ring RS256 verify of the same token (verify_rs256, this run): $VERIFY_US µs CPU alone, $VERIFY_LOADED_US µs while the auth-off gateway serves $RATE requests/s."
awk -v v="$VERIFY_LOADED_US" -v j="${FIXED[jwt_verify]}" -v c="${FIXED[jwt]}" -v o="${FIXED[off]}" \
    -v ju="${FIXED_USER[jwt_verify]}" -v cu="${FIXED_USER[jwt]}" -v ou="${FIXED_USER[off]}" 'BEGIN {
    printf "Against the verify under load: JWT verified on every request adds %.1f µs CPU = %.2f× (user CPU: %.1f µs = %.2f×);\n", j - o, (j - o) / v, ju - ou, (ju - ou) / v
    printf "JWT repeated (verified-token cache) adds %.1f µs CPU = %.2f× (user CPU: %.1f µs = %.2f×).\n", c - o, (c - o) / v, cu - ou, (cu - ou) / v
}'
echo "h2load: $RATE_CLIENTS HTTP/1.1 clients × $RATE_PER_CLIENT requests/s, $DURATION per case; raw output in $WORK"
