#!/usr/bin/env bash
# Authentication figures, measured in one run on loopback with the release binaries:
#   1. client_credentials grants per second at the token endpoint (SQLite);
#   2. read-by-id throughput with a bearer token against the same reads with authentication
#      disabled (`[auth] disabled = true`, development only), as a ratio.
# Usage: bench/auth.sh [seconds] [connections]   (after cargo build --release -p bastion -p bastion-bench)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_MEASURED="${1:-10}"
CONNECTIONS="${2:-16}"
BIN=target/release/bastion
BENCH=target/release/bastion-bench
WORK="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
SECRET="bench-auth-secret-0123456789"

start() { # $1 = name, $2 = extra TOML; prints the server's root URL
  local dir="$WORK/$1"; mkdir -p "$dir"
  cat > "$dir/bastion.toml" <<TOML
[server]
listen = "127.0.0.1:0"
data_dir = "$dir"
[storage]
url = "sqlite://$dir/bastion.db"
[[clients]]
id = "bench-auth"
kind = "confidential"
secret = "$SECRET"
scopes = "system/*.cruds"
$2
TOML
  BASTION_LOG=warn "$BIN" serve --config "$dir/bastion.toml" > "$dir/out" 2>&1 &
  echo $! > "$dir/pid"
  for _ in $(seq 1 100); do
    grep -q "listening on" "$dir/out" 2>/dev/null && break; sleep 0.1
  done
  grep -o "listening on http://[0-9.:]*" "$dir/out" | sed 's/listening on //'
}

token_for() {
  curl -s -u "bench-auth:$SECRET" -d grant_type=client_credentials -d 'scope=system/*.cruds' "$1/auth/token" \
    | sed 's/.*"access_token":"\([^"]*\)".*/\1/'
}

echo "## Token endpoint (client_credentials, SQLite)"
ROOT="$(start token "")"
"$BENCH" load --url "$ROOT/fhir" --scenario token --client "bench-auth:$SECRET" \
  --connections "$CONNECTIONS" --seconds "$SECONDS_MEASURED" --pid "$(cat "$WORK/token/pid")" --json | tee "$WORK/token.json"
kill "$(cat "$WORK/token/pid")"

echo "## Read by id: with a token, and with authentication disabled"
ROOT="$(start with-token "")"
TOKEN="$(token_for "$ROOT")"
"$BENCH" load --url "$ROOT/fhir" --scenario read --token "$TOKEN" --prepare 200 \
  --connections "$CONNECTIONS" --seconds "$SECONDS_MEASURED" --pid "$(cat "$WORK/with-token/pid")" --json | tee "$WORK/with.json"
kill "$(cat "$WORK/with-token/pid")"
ROOT="$(start disabled "[auth]
disabled = true")"
"$BENCH" load --url "$ROOT/fhir" --scenario read --prepare 200 \
  --connections "$CONNECTIONS" --seconds "$SECONDS_MEASURED" --pid "$(cat "$WORK/disabled/pid")" --json | tee "$WORK/without.json"

python3 - "$WORK" <<'PY'
import json, sys
w = sys.argv[1]
t, a, d = (json.load(open(f"{w}/{n}.json")) for n in ("token", "with", "without"))
print()
print("| figure | value |")
print("|---|---|")
print(f"| token endpoint, grants/s | {t['requests_per_second']:.0f} (p95 {t['p95_ms']:.2f} ms, errors {t['errors']}) |")
print(f"| read by id with token, req/s | {a['requests_per_second']:.0f} (p95 {a['p95_ms']:.2f} ms, errors {a['errors']}) |")
print(f"| read by id, auth disabled, req/s | {d['requests_per_second']:.0f} (p95 {d['p95_ms']:.2f} ms, errors {d['errors']}) |")
print(f"| with token / disabled | {a['requests_per_second'] / d['requests_per_second']:.2f} |")
PY
