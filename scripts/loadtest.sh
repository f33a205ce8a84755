#!/usr/bin/env bash
# Load run: GET /api/v1/me with a bearer token against a release build.
#
#   scripts/loadtest.sh [DURATION] [CONNECTIONS]      (defaults: 15s, 32)
#
# Starts target/release/rendermart on 127.0.0.1:18080 with a fresh data dir (the
# embedded defaults; export RENDERMART_DATABASE_URL / RENDERMART_BUS /
# RENDERMART_REDIS_URL to run on the distributed backends), measures start-to-ready
# (exec until /readyz answers 200) and idle RSS, signs a user up, creates an API token,
# runs wrk (Debian package `wrk`) on loopback, then stops the server with SIGTERM.
# Traffic only ever goes to 127.0.0.1; wrk stops by itself after DURATION.
set -euo pipefail

DURATION=${1:-15s}
CONNECTIONS=${2:-32}
BIN=${RENDERMART_BIN:-target/release/rendermart}
ADDR=127.0.0.1:18080
BASE=http://$ADDR

command -v wrk >/dev/null || { echo "install wrk (apt-get install wrk)" >&2; exit 1; }
[[ -x $BIN ]] || { echo "build first: cargo build --release" >&2; exit 1; }

DATA=$(mktemp -d)
LOG=$(mktemp)
cleanup() { [[ -n ${PID:-} ]] && kill "$PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$DATA"; }
trap cleanup EXIT

start_ns=$(date +%s%N)
RENDERMART_LOG_LEVEL=warn "$BIN" serve --addr "$ADDR" --data-dir "$DATA" >"$LOG" 2>&1 &
PID=$!
until curl -fsS -o /dev/null "$BASE/readyz" 2>/dev/null; do
    kill -0 "$PID" 2>/dev/null || { cat "$LOG"; exit 1; }
    sleep 0.005
done
ready_ms=$(( ($(date +%s%N) - start_ns) / 1000000 ))
sleep 3
rss_kib=$(awk '/VmRSS/ {print $2}' "/proc/$PID/status")
echo "start-to-ready: ${ready_ms} ms   idle RSS: $((rss_kib / 1024)) MiB (${rss_kib} KiB)"

JAR=$(mktemp)
email="load-$RANDOM$RANDOM@example.com"
csrf=$(curl -fsS -c "$JAR" -H 'content-type: application/json' \
    -d "{\"email\":\"$email\",\"display_name\":\"Load\",\"password\":\"correct horse battery\"}" \
    "$BASE/api/v1/auth/signup" | python3 -c 'import json,sys; print(json.load(sys.stdin)["csrf_token"])')
token=$(curl -fsS -b "$JAR" -H "x-csrf-token: $csrf" -H 'content-type: application/json' \
    -d '{"name":"load"}' "$BASE/api/v1/tokens" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
rm -f "$JAR"
curl -fsS -o /dev/null -H "authorization: Bearer $token" "$BASE/api/v1/me"

echo "wrk -t2 -c$CONNECTIONS -d$DURATION GET /api/v1/me (bearer)"
wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency -H "authorization: Bearer $token" "$BASE/api/v1/me"
rss_kib=$(awk '/VmRSS/ {print $2}' "/proc/$PID/status")
echo "RSS after load: $((rss_kib / 1024)) MiB"
kill -TERM "$PID"
wait "$PID" && echo "stopped cleanly on SIGTERM"
PID=
