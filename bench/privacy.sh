#!/usr/bin/env bash
# What labels and Consent cost, measured in one run on loopback (SQLite, release builds): the
# same requests with the same clinician token against two servers on the same data, this
# checkout and the access-control issue's last commit (BASE, built into target/privacy-base),
# over interleaved rounds. The data: 100 patients with 20 Observations each, one in ten
# Observations labelled (PSY or R), one in ten patients holding an active Consent (deny PSY
# except to a CareTeam, deny one practitioner outright).
# Usage: bench/privacy.sh [BASE commit, 89aebf8] [seconds per run, 3] [connections, 16] [rounds, 6]
#        (after cargo build --release -p bastion -p bastion-bench)
set -euo pipefail
cd "$(dirname "$0")/.."
BASE_COMMIT="${1:-89aebf8}"
SECONDS_MEASURED="${2:-3}"
CONNECTIONS="${3:-16}"
ROUNDS="${4:-6}"
BIN=target/release/bastion
BENCH=target/release/bastion-bench
BASE_TARGET="$PWD/target/privacy-base"
WORK="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; git worktree remove --force "$WORK/base-src" 2>/dev/null || true; rm -rf "$WORK"' EXIT

# The baseline binary, built once per commit.
if [ ! -x "$BASE_TARGET/$BASE_COMMIT/bastion" ]; then
  git worktree add --detach "$WORK/base-src" "$BASE_COMMIT" >/dev/null
  (cd "$WORK/base-src" && cargo build --release -p bastion --target-dir "$BASE_TARGET/build" >/dev/null)
  mkdir -p "$BASE_TARGET/$BASE_COMMIT"
  cp "$BASE_TARGET/build/release/bastion" "$BASE_TARGET/$BASE_COMMIT/bastion"
fi
BASE_BIN="$BASE_TARGET/$BASE_COMMIT/bastion"

SECRET="bench-privacy-secret-0123456789"
PASSWORD="bench-privacy-password"
HASH="$(printf '%s' "$PASSWORD" | "$BIN" hash-password)"
REDIRECT="http://localhost:9000/callback"
VERIFIER="bench-privacy-verifier-0123456789-0123456789-0123456789"
CHALLENGE="$(printf '%s' "$VERIFIER" | openssl dgst -sha256 -binary | base64 | tr '+/' '-_' | tr -d '=')"
. bench/signin.sh

start() { # $1 = name, $2 = binary; prints "ROOT PID"
  local dir="$WORK/$1"; mkdir -p "$dir"
  cat > "$dir/bastion.toml" <<TOML
[server]
listen = "127.0.0.1:0"
data_dir = "$dir"
[storage]
url = "sqlite://$dir/bastion.db"
[[clients]]
id = "bench-admin"
kind = "confidential"
secret = "$SECRET"
scopes = "system/*.cruds"
[[clients]]
id = "bench-app"
kind = "public"
redirect_uris = ["$REDIRECT"]
scopes = "user/*.rs"
[[users]]
username = "dr"
password = "$HASH"
fhir_user = "Practitioner/dr"
roles = ["clinician"]
[[roles]]
name = "clinician"
permissions = ["user/*.rs"]
sensitivity = ["PSY"]
TOML
  BASTION_LOG=warn "$2" serve --config "$dir/bastion.toml" > "$dir/out" 2>&1 &
  local pid=$!
  for _ in $(seq 1 100); do grep -q "listening on" "$dir/out" 2>/dev/null && break; sleep 0.1; done
  echo "$(grep -o "listening on http://[0-9.:]*" "$dir/out" | sed 's/listening on //') $pid"
}

# The dataset, as transaction Bundles of ten patients each.
python3 - "$WORK" <<'PY'
import json, sys
w = sys.argv[1]
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CONF = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
for b in range(10):
    entries = []
    for p in range(b * 10, b * 10 + 10):
        pid = f"p{p}"
        entries.append({"resource": {"resourceType": "Patient", "id": pid, "name": [{"family": f"F{p}"}]},
                        "request": {"method": "PUT", "url": f"Patient/{pid}"}})
        for o in range(20):
            obs = {"resourceType": "Observation", "id": f"{pid}-o{o}", "status": "final",
                   "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
                   "subject": {"reference": f"Patient/{pid}"}, "valueQuantity": {"value": 70 + o, "unit": "kg"}}
            if o % 10 == 3:
                obs["meta"] = {"security": [{"system": ACT, "code": "PSY"}]}
            if o % 10 == 7:
                obs["meta"] = {"security": [{"system": CONF, "code": "R"}]}
            entries.append({"resource": obs, "request": {"method": "PUT", "url": f"Observation/{pid}-o{o}"}})
        if p % 10 == 0:
            entries.append({"resource": {"resourceType": "CareTeam", "id": f"ct-{pid}", "status": "active",
                                         "subject": {"reference": f"Patient/{pid}"},
                                         "participant": [{"member": {"reference": "Practitioner/psych"}}]},
                            "request": {"method": "PUT", "url": f"CareTeam/ct-{pid}"}})
            entries.append({"resource": {"resourceType": "Consent", "id": f"consent-{pid}", "status": "active",
                "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
                "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
                "patient": {"reference": f"Patient/{pid}"}, "dateTime": "2026-01-01",
                "policyRule": {"coding": [{"system": ACT, "code": "OPTIN"}]},
                "provision": {"type": "permit", "provision": [
                    {"type": "deny", "actor": [{"role": {"text": "x"}, "reference": {"reference": "Practitioner/banned"}}]},
                    {"type": "deny", "securityLabel": [{"system": ACT, "code": "PSY"}],
                     "provision": [{"type": "permit", "actor": [{"role": {"text": "care team"}, "reference": {"reference": f"CareTeam/ct-{pid}"}}]}]}]}},
                "request": {"method": "PUT", "url": f"Consent/consent-{pid}"}})
    json.dump({"resourceType": "Bundle", "type": "transaction", "entry": entries}, open(f"{w}/bundle-{b}.json", "w"))
PY

read -r BASE_ROOT BASE_PID < <(start base "$BASE_BIN")
read -r NEW_ROOT NEW_PID < <(start new "$BIN")
token_of() { # $1 = root
  local admin
  admin="$(curl -s -u "bench-admin:$SECRET" -d grant_type=client_credentials -d 'scope=system/*.cruds' "$1/auth/token" \
    | sed 's/.*"access_token":"\([^"]*\)".*/\1/')"
  for f in "$WORK"/bundle-*.json; do
    curl -s -o /dev/null -w '' -X POST -H "Authorization: Bearer $admin" -H 'Content-Type: application/fhir+json' \
      --data-binary "@$f" "$1/fhir"
  done
  sign_in "$1" dr 'user/*.rs'
}
BASE_TOKEN="$(token_of "$BASE_ROOT")"
NEW_TOKEN="$(token_of "$NEW_ROOT")"
echo p1 > "$WORK/ids"

run() { # $1 = root, $2 = token, $3 = pid, scenario args...
  local root="$1" token="$2" pid="$3"; shift 3
  "$BENCH" load --url "$root/fhir" --token "$token" --connections "$CONNECTIONS" --warmup 1 --seconds "$SECONDS_MEASURED" --pid "$pid" --json "$@"
}
# Sanity: the new server hides what the labels and Consent say, the base does not.
count() { curl -s -H "Authorization: Bearer $2" "$1/fhir/Observation?subject=Patient/p0&_count=0" | python3 -c 'import json,sys; print(json.load(sys.stdin)["total"])'; }
echo "Observations of p0 (a Consent denies PSY outside its care team; 2 of 20 are R): base $(count "$BASE_ROOT" "$BASE_TOKEN"), new $(count "$NEW_ROOT" "$NEW_TOKEN")"

CONSENTED='Observation?subject=Patient/p0&_count=20'
PLAIN='Observation?subject=Patient/p1&_count=20'
for round in $(seq 1 "$ROUNDS"); do
  if [ $((round % 2)) -eq 1 ]; then order="base new"; else order="new base"; fi
  for who in $order; do
    if [ "$who" = base ]; then args=("$BASE_ROOT" "$BASE_TOKEN" "$BASE_PID"); else args=("$NEW_ROOT" "$NEW_TOKEN" "$NEW_PID"); fi
    run "${args[@]}" --scenario get --path "$CONSENTED" > "$WORK/consented-$who-$round.json"
    run "${args[@]}" --scenario get --path "$PLAIN" > "$WORK/plain-$who-$round.json"
    run "${args[@]}" --scenario read --ids "$WORK/ids" > "$WORK/read-$who-$round.json"
  done
done

python3 - "$WORK" "$ROUNDS" "$BASE_COMMIT" "$(git rev-parse --short HEAD)" <<'PY'
import json, sys
w, rounds, base, new = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
print()
print("| figure | value |")
print("|---|---|")
for what, label in (("consented", "search, patient with a Consent (GET Observation?subject=Patient/p0&_count=20)"),
                    ("plain", "search, patient without one (GET Observation?subject=Patient/p1&_count=20)"),
                    ("read", "read by id (GET Patient/p1)")):
    runs = {n: [json.load(open(f"{w}/{what}-{n}-{r}.json")) for r in range(1, rounds + 1)] for n in ("base", "new")}
    for n, rs in runs.items():
        assert all(r["errors"] == 0 for r in rs), "a measured request failed"
    rate = {n: sum(r["requests_per_second"] for r in rs) / rounds for n, rs in runs.items()}
    cpu = {n: sum(r["server_cpu_us_per_request"] for r in rs) / rounds for n, rs in runs.items()}
    print(f"| {label}, {base} (access control only), req/s | {rate['base']:.0f} (server CPU {cpu['base']:.0f} µs/req) |")
    print(f"| {label}, {new} (labels and Consent), req/s | {rate['new']:.0f} (server CPU {cpu['new']:.0f} µs/req) |")
    per_round = sorted(n["requests_per_second"] / b["requests_per_second"] for n, b in zip(runs["new"], runs["base"]))
    print(f"| **{what}: with labels and Consent / access control only** | **{rate['new'] / rate['base']:.2f}** (rounds {per_round[0]:.2f} to {per_round[-1]:.2f}; CPU per request {cpu['base'] / cpu['new']:.2f}) |")
PY
