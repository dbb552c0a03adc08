#!/usr/bin/env bash
# Crash safety: enrollments run over ACME (`rampart bench acme`, real http-01), the API and
# EST (curl) and SCEP (micromdm's scepclient) while the daemon is killed with SIGKILL at random moments, three times, and
# restarted. Afterwards: every certificate a client received is in the inventory, no
# serial was handed out twice, every issued certificate has its audit record and its
# certificate_issued webhook (verified with the standardwebhooks library) arrives,
# `rampart audit verify` passes, and the store opens cleanly each time.
source "$(dirname "$0")/lib.sh"
webhooks_venv

# list_inventory <file> [query] [jq condition] — the serials (without leading zeros, sorted)
# of the inventory's certificates, filtered by the API query (e.g. `&san=x`) and then by the
# jq condition on each item.
list_inventory() {
    : >"$1"
    local after=""
    while :; do
        curl -sf -H "Authorization: Bearer $KEY" "$API/api/v1/certificates?limit=500${2:-}${after:+&after=$after}" >"$WORK/page.json" ||
            fail "listing the inventory"
        jq -r ".items[] | select(${3:-true}) | .serial" "$WORK/page.json" | sed 's/^0*//' >>"$1"
        after="$(jq -r '.next_after // empty' "$WORK/page.json")"
        [[ -n "$after" ]] || break
    done
    sort -u -o "$1" "$1"
}

DIR="$WORK/ra"
"$RAMPART" init --dir "$DIR" >"$WORK/init.out" 2>"$WORK/init.err" || fail "rampart init: $(cat "$WORK/init.err")"
KEY="$(grep -o 'rpk_[A-Za-z0-9_-]*' "$WORK/init.out")" || fail "init printed no API key"
export RAMPART_API_KEY="$KEY"
PORT="$(free_port)"
EST_PORT="$(free_port)"
SCEP_PORT="$(free_port)"
HOOK_PORT="$(free_port)"
ACME_PORT="$(free_port)"
HTTP01_PORT="$(free_port)"
DNS_PORT="$(free_port)"
API="http://127.0.0.1:$PORT"
export RAMPART_API_URL="$API"
HASH="$(printf 'crash-pw' | "$RAMPART" hash-password)" || fail "hash-password"
CHALLENGE_HASH="$(printf 'crash-challenge' | "$RAMPART" hash-password)" || fail "hash-password"
"$RAMPART" webhooks new-secret >"$WORK/hook.whsec"
chmod 600 "$WORK/hook.whsec"
mkdir -p "$WORK/hook"
EVENTS="$WORK/hook/events.jsonl"
touch "$EVENTS"
cat >"$WORK/crash.toml" <<EOF
[server]
data_dir = "$DIR"
[api]
listen = "127.0.0.1:$PORT"
[acme]
listen = "127.0.0.1:$ACME_PORT"
http01_port = $HTTP01_PORT
dns_resolver = "127.0.0.1:$DNS_PORT"
allow_private_targets = true
[est]
listen = "127.0.0.1:$EST_PORT"
[est.users.loader]
password_hash = "$HASH"
roles = ["admin"]
[scep]
listen = "127.0.0.1:$SCEP_PORT"
[scep.profiles.default]
template = "client"
identity = "crash-devices"
roles = ["admin"]
challenge_hash = "$CHALLENGE_HASH"
legacy_algorithms = true
max_clock_skew_seconds = 86400
[limits]
# The loaders below hammer from one address; per-client rate limits are tested elsewhere.
per_ip_requests_per_minute = 0
[webhooks]
max_attempts = 1000
initial_backoff_ms = 100
max_backoff_seconds = 1
[webhooks.endpoints.audit]
url = "http://127.0.0.1:$HOOK_PORT/hook"
secret_file = "$WORK/hook.whsec"
events = ["certificate_issued"]
EOF
unset RAMPART__EST__LISTEN RAMPART__SCEP__LISTEN RAMPART__ACME__LISTEN
"$WEBHOOK_PYTHON" "$(dirname "$0")/webhook-receiver.py" "$HOOK_PORT" "$WORK/hook.whsec" "$EVENTS" &
start_rampart "$WORK/crash.toml"
FP="$(grep -o 'sha256 [0-9a-f]*' "$WORK/rampart.out" | cut -d' ' -f2 | tr 'a-f' 'A-F')"
[[ -n "$FP" ]] || fail "serve printed no SCEP RA fingerprint"

RECEIVED="$WORK/received"
mkdir -p "$RECEIVED"
# Each loader writes the serial of every certificate it received to its own file.
api_loader() {
    local i=0
    while [[ ! -f "$WORK/stop" ]]; do
        i=$((i + 1))
        openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout /dev/null -subj "/CN=api$i.test" \
            -addext "subjectAltName=DNS:api$i.test" -out "$WORK/api.csr" 2>/dev/null
        jq -n --rawfile csr "$WORK/api.csr" '{csr: $csr, template: "server"}' >"$WORK/api.json"
        if [[ "$(curl -s -m 5 -o "$WORK/api.out" -w '%{http_code}' -H "Authorization: Bearer $KEY" \
            -H 'Content-Type: application/json' --data-binary @"$WORK/api.json" "$API/api/v1/enrollments")" == 201 ]]; then
            jq -r .serial "$WORK/api.out" >>"$RECEIVED/api"
        fi
    done
}
est_loader() {
    local i=0
    while [[ ! -f "$WORK/stop" ]]; do
        i=$((i + 1))
        openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout /dev/null -subj "/CN=est$i.test" \
            -addext "subjectAltName=DNS:est$i.test" -outform DER 2>/dev/null | base64 >"$WORK/est.b64"
        if [[ "$(curl -s -m 5 --cacert "$DIR/ca-bundle.pem" -u loader:crash-pw -H 'Content-Type: application/pkcs10' \
            -o "$WORK/est.out" -w '%{http_code}' --data-binary @"$WORK/est.b64" \
            "https://localhost:$EST_PORT/.well-known/est/simpleenroll")" == 200 ]]; then
            base64 -d "$WORK/est.out" | openssl pkcs7 -inform DER -print_certs 2>/dev/null |
                openssl x509 -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f' >>"$RECEIVED/est"
        fi
    done
}
scep_loader() {
    local i=0 run
    while [[ ! -f "$WORK/stop" ]]; do
        i=$((i + 1))
        run="$WORK/scep/$i"
        mkdir -p "$run"
        # A fresh key and directory per device (scepclient keeps its state next to them).
        if (cd "$run" && timeout 10 scepclient -server-url "http://127.0.0.1:$SCEP_PORT/scep" \
            -challenge crash-challenge -ca-fingerprint "$FP" -private-key "$run/key.pem" \
            -certificate "$run/cert.pem" -cn "scep$i.test" >"$run/out" 2>&1) && [[ -s "$run/cert.pem" ]]; then
            openssl x509 -in "$run/cert.pem" -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f' >>"$RECEIVED/scep"
        fi
    done
}
# ACME: full orders through the bench tool, every chain it receives appended to a file.
"$RAMPART" bench acme --target "https://localhost:$ACME_PORT/acme/default/directory" \
    --ca-bundle "$DIR/ca-bundle.pem" --concurrency 2 --count 100000 \
    --http01-listen "127.0.0.1:$HTTP01_PORT" --dns-listen "127.0.0.1:$DNS_PORT" \
    --certificates-out "$WORK/acme-chains.pem" >"$WORK/bench.out" 2>&1 &
ACME_LOADER=$!
api_loader &
API_LOADER=$!
est_loader &
EST_LOADER=$!
scep_loader &
SCEP_LOADER=$!

for round in 1 2 3; do
    sleep "$(python3 -c 'import random; print(round(random.uniform(2, 4), 2))')"
    kill -KILL "$RAMPART_PID"
    wait "$RAMPART_PID" 2>/dev/null || true
    RAMPART_PID=""
    sleep 0.3
    start_rampart "$WORK/crash.toml"
    pass "round $round: killed with SIGKILL under load, restarted (store opened)"
done
sleep 2
touch "$WORK/stop"
kill "$ACME_LOADER" 2>/dev/null || true
wait "$ACME_LOADER" "$API_LOADER" "$EST_LOADER" "$SCEP_LOADER" 2>/dev/null || true
# The leaves among the complete PEM blocks the ACME bench received.
python3 - "$WORK/acme-chains.pem" "$WORK/acme-blocks" <<'PY'
import os, re, sys
text = open(sys.argv[1]).read() if os.path.exists(sys.argv[1]) else ""
os.makedirs(sys.argv[2], exist_ok=True)
blocks = re.findall(r"-----BEGIN CERTIFICATE-----\n.*?-----END CERTIFICATE-----\n", text, re.S)
for i, block in enumerate(blocks):
    open(os.path.join(sys.argv[2], f"{i:06}.pem"), "w").write(block)
PY
for pem in "$WORK"/acme-blocks/*.pem; do
    [[ -e "$pem" ]] || continue
    if openssl x509 -in "$pem" -noout -ext subjectAltName 2>/dev/null | matches 'bench.test'; then
        openssl x509 -in "$pem" -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f' >>"$RECEIVED/acme"
    fi
done

cat "$RECEIVED"/* 2>/dev/null | sed 's/^0*//' | sort >"$WORK/all-received"
TOTAL="$(wc -l <"$WORK/all-received")"
((TOTAL > 10)) || fail "only $TOTAL certificates were received under load"
for kind in acme api est scep; do
    [[ -s "$RECEIVED/$kind" ]] || fail "no $kind enrollment succeeded under load"
done
DUPS="$(uniq -d "$WORK/all-received" | wc -l)"
((DUPS == 0)) || fail "$DUPS serial(s) were received twice"
pass "$TOTAL certificates received over ACME, API, EST and SCEP ($(wc -l <"$RECEIVED/acme") / $(wc -l <"$RECEIVED/api") / $(wc -l <"$RECEIVED/est") / $(wc -l <"$RECEIVED/scep")), no serial twice"

# Every received certificate is in the inventory and has its issuance audit record
# (serials compared without leading zeros: openssl prints them without).
"$RAMPART" audit list --action issued --limit 1000 --json >"$WORK/issued.json" || fail "audit list"
jq -r '.items[].entry.subject' "$WORK/issued.json" | sed 's/^0*//' | sort -u >"$WORK/audited"
list_inventory "$WORK/inventory"
NOT_STORED="$(comm -23 "$WORK/all-received" "$WORK/inventory")"
[[ -z "$NOT_STORED" ]] || fail "received but not in the inventory: $NOT_STORED"
NOT_AUDITED="$(comm -23 "$WORK/all-received" "$WORK/audited")"
[[ -z "$NOT_AUDITED" ]] || fail "received without an issuance audit record: $NOT_AUDITED"
pass "every received certificate is in the inventory with its issuance audit record"

# Every issued certificate's webhook arrives (at least once).
for _ in $(seq 1 100); do
    jq -r 'select(.type == "certificate_issued") | .data.serial' "$EVENTS" | sed 's/^0*//' | sort -u >"$WORK/notified"
    if comm -23 "$WORK/audited" "$WORK/notified" | matches .; then sleep 0.3; else break; fi
done
LATE="$(comm -23 "$WORK/audited" "$WORK/notified" | wc -l)"
((LATE == 0)) || fail "$LATE issued certificate(s) never got their certificate_issued webhook"
[[ ! -s "$EVENTS.bad" ]] || fail "bad webhook signatures: $(cat "$EVENTS.bad")"
pass "every issued certificate's certificate_issued webhook arrived, signed"

"$RAMPART" audit verify >/dev/null || fail "rampart audit verify after the crashes"
pass "the audit chain verifies after three SIGKILLs"

# The SAN catalog (`?san=` queries): after the kills, the file saved when `rampart init`
# closed the store, caught up from the audit chain; saved at a clean stop, read back at the
# next start; each time the same answer as the certificates' names.
WITH_TEST_NAME='any(.sans[]; .value | tostring | contains(".test"))'
list_inventory "$WORK/san-expected" "" "$WITH_TEST_NAME"
[[ -s "$WORK/san-expected" ]] || fail "no certificate with a .test name to query"
list_inventory "$WORK/san-caught-up" "&san=.test"
cmp -s "$WORK/san-expected" "$WORK/san-caught-up" || fail "?san=.test after the kills: $(wc -l <"$WORK/san-caught-up") serials, expected $(wc -l <"$WORK/san-expected")"
grep -q "SAN catalog read back from its file" "$WORK/rampart.err" ||
    fail "the SAN catalog was not read back and caught up after the last kill: $(grep 'SAN catalog' "$WORK/rampart.err")"
stop_rampart
[[ -s "$DIR/store/san-catalog" ]] || fail "no SAN catalog saved at the clean stop"
start_rampart "$WORK/crash.toml"
list_inventory "$WORK/san-read-back" "&san=.test"
cmp -s "$WORK/san-expected" "$WORK/san-read-back" || fail "?san=.test after a clean restart: $(wc -l <"$WORK/san-read-back") serials, expected $(wc -l <"$WORK/san-expected")"
if grep -q "saved SAN catalog is not usable" "$WORK/rampart.err"; then
    fail "the saved SAN catalog was refused: $(grep 'SAN catalog' "$WORK/rampart.err")"
fi
pass "?san= queries agree with the certificates' names after the kills (saved catalog caught up from the audit chain, $(wc -l <"$WORK/san-expected") certificates) and after a clean restart (catalog saved and read back)"

# Offline compaction: refused while the daemon holds the store; afterwards the same
# inventory and an intact audit chain.
if "$RAMPART" compact --config "$WORK/crash.toml" >"$WORK/compact.out" 2>&1; then
    fail "rampart compact ran while the daemon was running"
fi
grep -q "in use by another process" "$WORK/compact.out" || fail "no clear refusal: $(cat "$WORK/compact.out")"
stop_rampart
"$RAMPART" compact --config "$WORK/crash.toml" >"$WORK/compact.out" 2>&1 || fail "rampart compact: $(cat "$WORK/compact.out")"
grep -q '^compacted' "$WORK/compact.out" || fail "rampart compact said: $(cat "$WORK/compact.out")"
[[ ! -e "$DIR/store.before-compaction" && ! -e "$DIR/store.compacting" ]] || fail "compaction left a directory behind"
start_rampart "$WORK/crash.toml"
list_inventory "$WORK/inventory-compacted"
cmp -s "$WORK/inventory" "$WORK/inventory-compacted" || fail "the inventory changed in compaction"
grep -q "SAN catalog read back from its file" "$WORK/rampart.err" ||
    fail "the saved SAN catalog did not come along in compaction: $(grep 'SAN catalog' "$WORK/rampart.err")"
"$RAMPART" audit verify >/dev/null || fail "rampart audit verify after compaction"
pass "rampart compact: refused while running; then $(wc -l <"$WORK/inventory") certificates, the audit chain intact and the saved SAN catalog kept ($(tail -1 "$WORK/compact.out"))"
stop_rampart
