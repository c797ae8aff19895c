#!/usr/bin/env bash
# What authorization costs, measured in one run on loopback with the release binaries (SQLite):
# read-by-id of one Patient, and a search of that patient's Observations, with a patient-scoped
# token (launch/patient patient/*.rs, from the real login and consent pages driven with curl)
# against the same requests with tokens that may see everything: a user's (user/*.rs, the same
# token machinery, so only the policy differs) and a backend client's (system/*.cruds), as
# ratios, over interleaved rounds.
# Usage: bench/policy.sh [seconds per run, 3] [connections, 16] [rounds, 6]   (after cargo build --release -p bastion -p bastion-bench)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_MEASURED="${1:-3}"
CONNECTIONS="${2:-16}"
ROUNDS="${3:-6}"
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
scopes = "launch/patient patient/*.rs user/*.rs"
[[users]]
username = "ann"
password = "$HASH"
fhir_user = "Patient/ann"
roles = ["patient"]
[[users]]
username = "dr-all"
password = "$HASH"
fhir_user = "Practitioner/dr-all"
roles = ["clinician"]
[[roles]]
name = "patient"
permissions = ["patient/*.rs"]
[[roles]]
name = "clinician"
permissions = ["user/*.rs"]
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

# Users sign in on the real pages.
. bench/signin.sh
PATIENT="$(sign_in "$ROOT" ann launch/patient 'patient/*.rs')"
CLINICIAN="$(sign_in "$ROOT" dr-all 'user/*.rs')"
echo ann > "$WORK/ids"

run() { # $1 = token, $2 = scenario args...
  local token="$1"; shift
  "$BENCH" load --url "$ROOT/fhir" --token "$token" --connections "$CONNECTIONS" --warmup 1 --seconds "$SECONDS_MEASURED" --pid "$PID" --json "$@"
}
# Short runs, interleaved: every round measures each token once, in turn, so that the machine's
# drift during the run (large on this shared host: a 10 s figure moves by 20 % from one minute
# to the next) weighs on every side alike; the figures are means over the rounds, and the
# spread of the per-round ratios is printed beside them.
SEARCH='Observation?subject=Patient/ann&_count=20'
ORDERS=("admin clinician patient" "clinician patient admin" "patient admin clinician")
for round in $(seq 1 "$ROUNDS"); do
  # The order rotates from round to round, so that no token always comes first.
  for who in ${ORDERS[$(( (round - 1) % 3 ))]}; do
    case "$who" in admin) token="$ADMIN" ;; clinician) token="$CLINICIAN" ;; patient) token="$PATIENT" ;; esac
    run "$token" --scenario read --ids "$WORK/ids" > "$WORK/read-$who-$round.json"
    run "$token" --scenario get --path "$SEARCH" > "$WORK/search-$who-$round.json"
  done
done

python3 - "$WORK" "$ROUNDS" <<'PY'
import json, sys
w, rounds = sys.argv[1], int(sys.argv[2])
names = {"admin": "backend token that sees everything (system/*.cruds)",
         "clinician": "user token that sees everything (user/*.rs)",
         "patient": "patient-scoped user token (patient/*.rs)"}
print()
print("| figure | value |")
print("|---|---|")
for what, label in (("read", "read by id (GET Patient/ann)"), ("search", "search (GET Observation?subject=Patient/ann&_count=20)")):
    runs = {n: [json.load(open(f"{w}/{what}-{n}-{r}.json")) for r in range(1, rounds + 1)] for n in names}
    for n, rs in runs.items():
        assert all(r["errors"] == 0 for r in rs), "a measured request failed"
    rate = {n: sum(r["requests_per_second"] for r in rs) / rounds for n, rs in runs.items()}
    cpu = {n: sum(r["server_cpu_us_per_request"] for r in rs) / rounds for n, rs in runs.items()}
    for n in names:
        print(f"| {label}, {names[n]}, req/s | {rate[n]:.0f} (server CPU {cpu[n]:.0f} µs/req) |")
    for other in ("clinician", "admin"):
        per_round = sorted(p["requests_per_second"] / o["requests_per_second"] for p, o in zip(runs["patient"], runs[other]))
        star = "**" if other == "clinician" else ""
        print(f"| {star}{what}: patient-scoped / {names[other].split(' (')[0]}{star} | {star}{rate['patient'] / rate[other]:.2f}{star} (rounds {per_round[0]:.2f} to {per_round[-1]:.2f}; CPU per request {cpu[other] / cpu['patient']:.2f}) |")
PY
