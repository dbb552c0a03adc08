#!/usr/bin/env bash
# Secrets never reach the logs: a full run at RUST_LOG=debug — an API key created over the
# API and used for an enrollment with a server-generated key, EST simpleenroll (and a wrong
# password) and serverkeygen with HTTP Basic, SCEP (micromdm's scepclient) with the static
# challenge, a wrong one and a one-time challenge, an ACME account with external account
# binding and an order (certbot), a webhook endpoint with a signing secret (deliveries
# failing and retried) — then the daemon's log (stderr) and its stdout are searched for
# every secret involved: API key tokens, the EST password and its Basic encoding, SCEP
# challenges, the EAB HMAC key, the webhook secret, private keys (PEM markers and key
# material of every key rampart holds or handed out) and the escrow key.
# shellcheck source-path=SCRIPTDIR source=lib.sh disable=SC1091
source "$(dirname "$0")/lib.sh"

command -v scepclient >/dev/null || fail "scepclient missing (apt-get install scep)"
certbot_venv

EST_PASSWORD="est-$(openssl rand -hex 12)"
SCEP_CHALLENGE="scep-$(openssl rand -hex 12)"
HTTP01_PORT="$(free_port)"
EST_PORT="$(free_port)"
SCEP_PORT="$(free_port)"
HOOK_PORT="$(free_port)"
acme_lab_config "http01_port = $HTTP01_PORT"
EST_HASH="$(printf '%s' "$EST_PASSWORD" | "$RAMPART" hash-password)" || fail "hash-password"
SCEP_HASH="$(printf '%s' "$SCEP_CHALLENGE" | "$RAMPART" hash-password)" || fail "hash-password"
"$RAMPART" webhooks new-secret >"$WORK/hook.whsec" || fail "webhooks new-secret"
chmod 600 "$WORK/hook.whsec"
WEBHOOK_SECRET="$(tr -d '\n' <"$WORK/hook.whsec")"
cat >>"$DIR/rampart.toml" <<TOML
[est.profiles.default]
template = "client"
escrow_keys = true
[est.users.device-7]
password_hash = "$EST_HASH"
roles = ["admin"]
[scep.profiles.default]
template = "client"
identity = "scep-default"
roles = ["scep-demo"]
challenge_hash = "$SCEP_HASH"
[webhooks]
initial_backoff_ms = 100
max_backoff_seconds = 1
[webhooks.endpoints.siem]
# Nothing listens there: every delivery fails and is retried (and logged).
url = "http://127.0.0.1:$HOOK_PORT/hook"
secret_file = "$WORK/hook.whsec"
TOML
export RAMPART__EST__LISTEN="127.0.0.1:$EST_PORT"
export RAMPART__SCEP__LISTEN="127.0.0.1:$SCEP_PORT"
export RUST_LOG=debug
start_rampart "$DIR/rampart.toml"
unset RUST_LOG
ADMIN_KEY="$(grep -o 'rpk_[A-Za-z0-9_-]*' "$WORK/rampart.out")" || fail "serve printed no admin API key"
EST="https://localhost:$EST_PORT/.well-known/est"
SCEP="http://127.0.0.1:$SCEP_PORT/scep"
CA=(--cacert "$DIR/ca-bundle.pem")

# post_json <token> <path> <json> — the answer's body; fails unless 2xx
post_json() {
    curl -sf -H "Authorization: Bearer $1" -H 'Content-Type: application/json' --data-binary "$3" "$API$2" \
        || fail "POST $2 failed"
}

# The admin API: a new API key, used for an enrollment with a key rampart generates.
API_KEY="$(post_json "$ADMIN_KEY" /api/v1/api-keys '{"identity": "ci-bot", "roles": ["admin"]}' | jq -r .token)"
[[ "$API_KEY" == rpk_* ]] || fail "no API key token in the answer"
post_json "$API_KEY" /api/v1/enrollments \
    '{"generate_key": "ecdsa-p256", "names": ["app.test"], "template": "server"}' >"$WORK/generated.json"
jq -r .private_key "$WORK/generated.json" >"$WORK/generated.key"
openssl pkey -in "$WORK/generated.key" -noout || fail "the generated key is not a private key"
pass "API: an API key created and used for an enrollment with a generated key"

# EST with HTTP Basic: simpleenroll, a wrong password, serverkeygen.
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/dev.key" -subj /CN=dev7.test \
    -addext subjectAltName=DNS:dev7.test -outform DER 2>/dev/null | base64 >"$WORK/dev.b64"
STATUS="$(curl -s "${CA[@]}" -o "$WORK/dev.p7" -w '%{http_code}' -u "device-7:$EST_PASSWORD" \
    -H 'Content-Type: application/pkcs10' --data-binary @"$WORK/dev.b64" "$EST/simpleenroll")"
[[ "$STATUS" == 200 ]] || fail "EST simpleenroll answered $STATUS"
STATUS="$(curl -s "${CA[@]}" -o /dev/null -w '%{http_code}' -u "device-7:x$EST_PASSWORD" \
    -H 'Content-Type: application/pkcs10' --data-binary @"$WORK/dev.b64" "$EST/simpleenroll")"
[[ "$STATUS" == 401 ]] || fail "EST with a wrong password answered $STATUS"
STATUS="$(curl -s "${CA[@]}" -o "$WORK/keygen.out" -w '%{http_code}' -u "device-7:$EST_PASSWORD" \
    -H 'Content-Type: application/pkcs10' --data-binary @"$WORK/dev.b64" "$EST/serverkeygen")"
[[ "$STATUS" == 200 ]] || fail "EST serverkeygen answered $STATUS"
python3 - "$WORK/keygen.out" "$WORK/keygen.der" <<'PY' || fail "serverkeygen answer has no key part"
import base64, sys
body = open(sys.argv[1], "rb").read().decode()
key = [p for p in body.split("--rampart-est-serverkeygen") if "application/pkcs8" in p][0]
open(sys.argv[2], "wb").write(base64.b64decode(key.split("\r\n\r\n", 1)[1].strip()))
PY
openssl pkey -inform DER -in "$WORK/keygen.der" -out "$WORK/keygen.key" || fail "serverkeygen key is not PKCS#8"
pass "EST: simpleenroll with HTTP Basic, a wrong password refused, serverkeygen (escrowed)"

# SCEP: the static challenge, a wrong one, a one-time challenge from the admin API.
FP="$(grep -o 'sha256 [0-9a-f]*' "$WORK/rampart.out" | cut -d' ' -f2 | tr 'a-f' 'A-F')"
[[ -n "$FP" ]] || fail "serve printed no SCEP RA fingerprint"
# scep_enroll <run> <cn> <challenge> — scepclient in $WORK/<run>; its exit status
scep_enroll() {
    mkdir -p "$WORK/$1"
    timeout 60 scepclient -server-url "$SCEP" -ca-fingerprint "$FP" -private-key "$WORK/$1/key.pem" \
        -certificate "$WORK/$1/cert.pem" -cn "$2" -challenge "$3" >"$WORK/$1/out" 2>&1
}
scep_enroll static dev1.test "$SCEP_CHALLENGE" || fail "scepclient with the static challenge: $(cat "$WORK/static/out")"
if scep_enroll wrong dev2.test "x$SCEP_CHALLENGE"; then fail "a wrong SCEP challenge enrolled"; fi
ONE_TIME="$(post_json "$ADMIN_KEY" /api/v1/scep/challenges \
    '{"identity": "device-42", "names": ["dev42.test"], "valid_for_seconds": 600}' | jq -r .challenge)"
[[ -n "$ONE_TIME" && "$ONE_TIME" != null ]] || fail "no one-time challenge in the answer"
scep_enroll once dev42.test "$ONE_TIME" || fail "scepclient with a one-time challenge: $(cat "$WORK/once/out")"
pass "SCEP: static challenge, a wrong challenge refused, a one-time challenge"

# ACME: an account bound to an external account key, and an order (http-01), with certbot.
post_json "$ADMIN_KEY" /api/v1/acme/eab-keys '{"identity": "team-web", "roles": ["acme-demo"]}' >"$WORK/eab.json"
EAB_KID="$(jq -r .key_id "$WORK/eab.json")"
EAB_HMAC="$(jq -r .hmac_key "$WORK/eab.json")"
[[ -n "$EAB_HMAC" && "$EAB_HMAC" != null ]] || fail "no EAB HMAC key in the answer"
REQUESTS_CA_BUNDLE="$DIR/ca-bundle.pem" "$CERTBOT" certonly --server "$DIRECTORY" --config-dir "$WORK/certbot/config" \
    --work-dir "$WORK/certbot/work" --logs-dir "$WORK/certbot/logs" --non-interactive --agree-tos -m ops@example.org \
    --eab-kid="$EAB_KID" --eab-hmac-key="$EAB_HMAC" --standalone --preferred-challenges http \
    --http-01-port "$HTTP01_PORT" --http-01-address 127.0.0.1 -d localhost --cert-name lab >"$WORK/certbot.out" 2>&1 \
    || fail "certbot certonly with EAB: $(tail -20 "$WORK/certbot.out")"
pass "ACME: certbot registered with external account binding and got a certificate"

# Let the webhook deliveries fail and retry a few times.
for _ in $(seq 1 50); do
    if grep -q 'siem' "$WORK/rampart.err"; then break; fi
    sleep 0.1
done
sleep 2
grep -q 'siem' "$WORK/rampart.err" || fail "the log says nothing about the webhook endpoint"
stop_rampart

# The log as text, without colour codes (a secret split by them would slip through).
LOG="$WORK/log.txt"
sed 's/\x1b\[[0-9;]*m//g' "$WORK/rampart.err" >"$LOG"
DEBUG_LINES="$(grep -c ' DEBUG ' "$LOG" || true)"
[[ "$DEBUG_LINES" -gt 100 ]] || fail "the log has only $DEBUG_LINES DEBUG lines: not a debug-level run"
grep -q 'DEBUG rampart' "$LOG" || fail "no DEBUG lines from rampart itself"
for listener in api acme est scep; do
    grep -Eq "DEBUG rampart.* request listener=\"?$listener\"? " "$LOG" || fail "no debug request lines of the $listener listener"
done

# Every key rampart holds or handed out, by its PEM body's first line.
KEYS=("$DIR/ca/root.key.pem" "$DIR/ca/issuing.key.pem" "$DIR/ca/scep-ra.key.pem" "$DIR/tls/listener.key.pem"
    "$WORK/generated.key" "$WORK/keygen.key")
[[ -f "$DIR/escrow.key" ]] || fail "no escrow key was made: the run did not escrow anything"
ESCROW_HEX="$(xxd -p -c 64 "$DIR/escrow.key")"
ESCROW_B64="$(base64 -w0 "$DIR/escrow.key")"
ESCROW_B64URL="$(tr '+/' '-_' <<<"${ESCROW_B64%%=*}")"
SECRETS=(
    "admin API key=$ADMIN_KEY"
    "created API key=$API_KEY"
    "EST password=$EST_PASSWORD"
    "EST Basic credentials=$(printf 'device-7:%s' "$EST_PASSWORD" | base64 -w0)"
    "SCEP static challenge=$SCEP_CHALLENGE"
    "SCEP one-time challenge=$ONE_TIME"
    "EAB HMAC key=$EAB_HMAC"
    "webhook secret=$WEBHOOK_SECRET"
    "webhook secret key=${WEBHOOK_SECRET#whsec_}"
    "escrow key (hex)=$ESCROW_HEX"
    "escrow key (base64)=$ESCROW_B64"
    "escrow key (base64url)=$ESCROW_B64URL"
    "a PEM private key marker=PRIVATE KEY"
)
for key in "${KEYS[@]}"; do
    [[ -f "$key" ]] || fail "missing $key"
    SECRETS+=("private key $(basename "$key")=$(sed -n 2p "$key")")
done
# assert_absent <file> <what> <value>
assert_absent() {
    [[ ${#3} -ge 8 ]] || fail "$2: suspiciously short value"
    if grep -qF -- "$3" "$1"; then
        fail "$2 appears in $(basename "$1"): $(grep -nF -- "$3" "$1" | head -2 | cut -c1-160)"
    fi
}
for entry in "${SECRETS[@]}"; do
    assert_absent "$LOG" "${entry%%=*}" "${entry#*=}"
done
# stdout shows the first admin API key once, by design; nothing else.
for entry in "${SECRETS[@]:1}"; do
    assert_absent "$WORK/rampart.out" "${entry%%=*}" "${entry#*=}"
done
pass "no secret in $(wc -l <"$LOG") lines of debug log (${#SECRETS[@]} secrets checked, stdout too)"
