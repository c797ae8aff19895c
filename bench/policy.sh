#!/usr/bin/env bash
# What authorization costs, measured in one run on loopback with the release binaries (SQLite):
# read-by-id of one Patient with a patient-scoped token (launch/patient patient/*.rs, from the
# real login and consent pages driven with curl) against the same reads with a token that may
# see everything (system/*.cruds), as a ratio.
# Usage: bench/policy.sh [seconds] [connections]   (after cargo build --release -p bastion -p bastion-bench)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_MEASURED="${1:-10}"
CONNECTIONS="${2:-16}"
BIN=target/release/bastion
BENCH=target/release/bastion-bench
WORK="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
SECRET="bench-policy-secret-0123456789"
PASSWORD="bench-policy-password"
HASH="$(printf '%s' "$PASSWORD" | "$BIN" hash-password)"
REDIRECT="http://localhost:9000/callback"
VERIFIER="bench-policy-verifier-0123456789-0123456789-0123456789"
CHALLENGE="$(printf '%s' "$VERIFIER" | openssl dgst -sha256 -binary | base64 | tr '+/' '-_' | tr -d '=')"

cat > "$WORK/bastion.toml" <<TOML
[server]
listen = "127.0.0.1:0"
data_dir = "$WORK"
[storage]
url = "sqlite://$WORK/bastion.db"
[[clients]]
id = "bench-admin"
kind = "confidential"
secret = "$SECRET"
scopes = "system/*.cruds"
[[clients]]
id = "bench-app"
kind = "public"
redirect_uris = ["$REDIRECT"]
scopes = "launch/patient patient/*.rs"
[[users]]
username = "ann"
password = "$HASH"
fhir_user = "Patient/ann"
roles = ["patient"]
[[roles]]
name = "patient"
permissions = ["patient/*.rs"]
TOML
BASTION_LOG=warn "$BIN" serve --config "$WORK/bastion.toml" > "$WORK/out" 2>&1 &
PID=$!
for _ in $(seq 1 100); do grep -q "listening on" "$WORK/out" 2>/dev/null && break; sleep 0.1; done
ROOT="$(grep -o "listening on http://[0-9.:]*" "$WORK/out" | sed 's/listening on //')"

ADMIN="$(curl -s -u "bench-admin:$SECRET" -d grant_type=client_credentials -d 'scope=system/*.cruds' "$ROOT/auth/token" \
  | sed 's/.*"access_token":"\([^"]*\)".*/\1/')"
# ann, another patient, and observations for both
for p in ann bob; do
  curl -s -o /dev/null -X PUT -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/fhir+json' \
    -d "{\"resourceType\":\"Patient\",\"id\":\"$p\"}" "$ROOT/fhir/Patient/$p"
  for i in $(seq 1 20); do
    curl -s -o /dev/null -X POST -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/fhir+json' \
      -d "{\"resourceType\":\"Observation\",\"status\":\"final\",\"code\":{\"text\":\"w\"},\"subject\":{\"reference\":\"Patient/$p\"}}" "$ROOT/fhir/Observation"
  done
done

# ann signs in on the real pages.
field() { grep -o "name=\"$1\" value=\"[^\"]*\"" "$2" | head -1 | sed 's/.*value="//; s/"$//'; }
curl -s -c "$WORK/jar" -b "$WORK/jar" -G "$ROOT/auth/authorize" \
  --data-urlencode response_type=code --data-urlencode client_id=bench-app --data-urlencode "redirect_uri=$REDIRECT" \
  --data-urlencode 'scope=launch/patient patient/*.rs' --data-urlencode state=s --data-urlencode "aud=$ROOT/fhir" \
  --data-urlencode "code_challenge=$CHALLENGE" --data-urlencode code_challenge_method=S256 > "$WORK/login.html"
curl -s -c "$WORK/jar" -b "$WORK/jar" --data-urlencode "request=$(field request "$WORK/login.html")" \
  --data-urlencode "csrf=$(field csrf "$WORK/login.html")" --data-urlencode username=ann \
  --data-urlencode "password=$PASSWORD" "$ROOT/auth/login" > "$WORK/consent.html"
curl -s -D "$WORK/headers" -o /dev/null -c "$WORK/jar" -b "$WORK/jar" \
  --data-urlencode "request=$(field request "$WORK/consent.html")" --data-urlencode "csrf=$(field csrf "$WORK/consent.html")" \
  --data-urlencode scope=launch/patient --data-urlencode 'scope=patient/*.rs' --data-urlencode decision=approve "$ROOT/auth/consent"
CODE="$(grep -i '^location:' "$WORK/headers" | sed 's/.*[?&]code=\([^&]*\).*/\1/' | tr -d '\r\n')"
PATIENT="$(curl -s -d grant_type=authorization_code --data-urlencode "code=$CODE" --data-urlencode "redirect_uri=$REDIRECT" \
  -d client_id=bench-app --data-urlencode "code_verifier=$VERIFIER" "$ROOT/auth/token" | sed 's/.*"access_token":"\([^"]*\)".*/\1/')"
echo ann > "$WORK/ids"

run() { # $1 = token, $2 = scenario args...
  local token="$1"; shift
  "$BENCH" load --url "$ROOT/fhir" --token "$token" --connections "$CONNECTIONS" --seconds "$SECONDS_MEASURED" --pid "$PID" --json "$@"
}
run "$ADMIN" --scenario read --ids "$WORK/ids" | tee "$WORK/read-admin.json"
run "$PATIENT" --scenario read --ids "$WORK/ids" | tee "$WORK/read-patient.json"

python3 - "$WORK" <<'PY'
import json, sys
w = sys.argv[1]
a, p = (json.load(open(f"{w}/read-{n}.json")) for n in ("admin", "patient"))
assert p["errors"] == 0 and a["errors"] == 0, "a measured request failed"
print()
print("| figure | value |")
print("|---|---|")
print(f"| read by id, token that sees everything (system/*.cruds), req/s | {a['requests_per_second']:.0f} (p95 {a['p95_ms']:.2f} ms, CPU {a['server_cpu_us_per_request']:.0f} µs/req) |")
print(f"| read by id, patient-scoped token (patient/*.rs), req/s | {p['requests_per_second']:.0f} (p95 {p['p95_ms']:.2f} ms, CPU {p['server_cpu_us_per_request']:.0f} µs/req) |")
print(f"| patient-scoped / sees everything | {p['requests_per_second'] / a['requests_per_second']:.2f} |")
PY
