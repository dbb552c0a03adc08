#!/usr/bin/env bash
# Conformance: the admin API driven by curl, certificates checked by openssl.
# `rampart init`, `rampart serve`, enrollment for four key types, `openssl verify` of the
# chain against the CA bundle, a real TLS handshake (s_server/s_client) with the issued
# certificate, downloads (PEM, DER, PKCS#7), the `rampart certs` CLI, revocation, refusal
# of bad input, and a restart that reuses everything.
source "$(dirname "$0")/lib.sh"

DIR="$WORK/ra"
"$RAMPART" init --dir "$DIR" >"$WORK/init.out" 2>"$WORK/init.err" || fail "rampart init: $(cat "$WORK/init.err")"
KEY="$(grep -o 'rpk_[A-Za-z0-9_-]*' "$WORK/init.out")" || fail "init printed no API key"
[[ -f "$DIR/rampart.toml" ]] || fail "init wrote no rampart.toml"
grep -q '^# ' "$DIR/rampart.toml" || fail "rampart.toml is not commented"
[[ "$(stat -c %a "$DIR/ca/issuing.key.pem")" == 600 ]] || fail "issuing key is not 0600"
[[ "$(stat -c %a "$DIR/ca/root.key.pem")" == 600 ]] || fail "root key is not 0600"
grep -rq "${KEY#rpk_*_}" "$DIR" && fail "the API key secret is stored in clear"
pass "init wrote a commented config, a CA with 0600 keys, and an API key stored only hashed"

PORT="$(free_port)"
export RAMPART__API__LISTEN="127.0.0.1:$PORT"
API="http://127.0.0.1:$PORT"
start_rampart "$DIR/rampart.toml"
grep -q "$API/api/v1/" "$WORK/rampart.out" || fail "serve did not print the API URL"
grep -q "ca-bundle.pem" "$WORK/rampart.out" || fail "serve did not print the CA bundle path"
grep -q "rpk_" "$WORK/rampart.out" && fail "serve printed an API key although init created one"
BUNDLE="$DIR/ca-bundle.pem"
AUTH=(-H "Authorization: Bearer $KEY")

declare -A KEYGEN=(
    [ec256]="-newkey ec -pkeyopt ec_paramgen_curve:P-256"
    [ec384]="-newkey ec -pkeyopt ec_paramgen_curve:P-384"
    [rsa2048]="-newkey rsa:2048"
    [ed25519]="-newkey ed25519"
)
for kind in ec256 ec384 rsa2048 ed25519; do
    name="$kind.example"
    # shellcheck disable=SC2086
    openssl req -new ${KEYGEN[$kind]} -nodes -keyout "$WORK/$kind.key" -subj "/CN=$name" \
        -addext "subjectAltName=DNS:$name,IP:127.0.0.1" -out "$WORK/$kind.csr" 2>/dev/null
    status="$(enroll "$WORK/$kind.csr" server)"
    [[ "$status" == 201 ]] || fail "$kind enrollment answered $status: $(cat "$WORK/resp.json")"
    jq -r .certificate "$WORK/resp.json" >"$WORK/$kind.crt"
    jq -r .chain "$WORK/resp.json" >"$WORK/$kind.chain"
    jq -r .serial "$WORK/resp.json" >"$WORK/$kind.serial"
    openssl verify -CAfile "$BUNDLE" -untrusted "$WORK/$kind.chain" -purpose sslserver "$WORK/$kind.crt" >/dev/null \
        || fail "$kind: openssl verify failed"
    text="$(openssl x509 -in "$WORK/$kind.crt" -noout -text)"
    grep -q "DNS:$name, IP Address:127.0.0.1" <<<"$text" || fail "$kind: SANs missing"
    grep -q "TLS Web Server Authentication" <<<"$text" || fail "$kind: serverAuth EKU missing"
    grep -q "CA:FALSE" <<<"$text" || fail "$kind: not marked CA:FALSE"
    [[ "$(openssl x509 -in "$WORK/$kind.crt" -noout -pubkey)" == "$(openssl pkey -in "$WORK/$kind.key" -pubout)" ]] \
        || fail "$kind: certificate key is not the CSR key"
    serial_hex="$(openssl x509 -in "$WORK/$kind.crt" -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f' | sed 's/^0*//')"
    [[ "$serial_hex" == "$(sed 's/^0*//' "$WORK/$kind.serial")" ]] || fail "$kind: serial differs from the API's"
    openssl x509 -in "$WORK/$kind.crt" -noout -checkend $((89 * 86400)) >/dev/null || fail "$kind: expires too soon"
    openssl x509 -in "$WORK/$kind.crt" -noout -checkend $((91 * 86400)) >/dev/null && fail "$kind: lives too long"
    pass "$kind: issued, chain verifies with openssl, SANs/EKU/key/serial/lifetime as asked"
done

# A real TLS handshake with an issued certificate, verified by hostname.
TLS_PORT="$(free_port)"
openssl s_server -quiet -accept "127.0.0.1:$TLS_PORT" -cert "$WORK/ec256.crt" -key "$WORK/ec256.key" \
    -cert_chain "$WORK/ec256.chain" -www >/dev/null 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 50); do (echo >/dev/tcp/127.0.0.1/"$TLS_PORT") 2>/dev/null && break; sleep 0.1; done
echo | openssl s_client -connect "127.0.0.1:$TLS_PORT" -servername ec256.example -verify_hostname ec256.example \
    -CAfile "$BUNDLE" -verify_return_error >"$WORK/s_client.out" 2>&1 || fail "TLS handshake failed: $(tail -5 "$WORK/s_client.out")"
grep -q "Verify return code: 0 (ok)" "$WORK/s_client.out" || fail "s_client did not verify the server"
kill "$SERVER_PID"
pass "openssl s_client verifies an s_server running on an issued certificate"

# Downloads.
SERIAL="$(cat "$WORK/ec256.serial")"
curl -sf "${AUTH[@]}" "$API/api/v1/certificates/$SERIAL/download?format=der" -o "$WORK/dl.der" || fail "DER download"
openssl x509 -inform DER -in "$WORK/dl.der" -noout -fingerprint -sha256 >/dev/null || fail "DER download is not a certificate"
cmp <(openssl x509 -inform DER -in "$WORK/dl.der") <(openssl x509 -in "$WORK/ec256.crt") || fail "DER download differs"
curl -sf "${AUTH[@]}" "$API/api/v1/certificates/$SERIAL/download?format=p7b" -o "$WORK/dl.p7b" || fail "P7B download"
[[ "$(openssl pkcs7 -inform DER -in "$WORK/dl.p7b" -print_certs | grep -c 'BEGIN CERTIFICATE')" == 2 ]] \
    || fail "PKCS#7 download does not hold certificate + issuing CA"
curl -sf "${AUTH[@]}" "$API/api/v1/certificates/$SERIAL/download?format=pem" -o "$WORK/dl.pem" || fail "PEM download"
openssl verify -CAfile "$BUNDLE" -untrusted "$WORK/dl.pem" "$WORK/dl.pem" >/dev/null || fail "PEM download chain"
pass "downloads: DER, PKCS#7 certs-only and PEM chain read by openssl"

# The CLI, through the API.
export RAMPART_API_KEY="$KEY"
"$RAMPART" certs list --config "$DIR/rampart.toml" --template server >"$WORK/list.out" || fail "certs list"
[[ "$(grep -c '\.example' "$WORK/list.out")" == 4 ]] || fail "certs list shows $(cat "$WORK/list.out")"
"$RAMPART" certs show "$SERIAL" --config "$DIR/rampart.toml" | jq -e '.status == "valid"' >/dev/null || fail "certs show"
"$RAMPART" certs export "$SERIAL" --format der --out "$WORK/cli.der" --config "$DIR/rampart.toml" 2>/dev/null || fail "certs export"
cmp "$WORK/cli.der" "$WORK/dl.der" || fail "certs export differs from the API download"
"$RAMPART" certs revoke "$SERIAL" --reason keyCompromise --config "$DIR/rampart.toml" >/dev/null || fail "certs revoke"
"$RAMPART" certs revoke "$SERIAL" --reason keyCompromise --config "$DIR/rampart.toml" 2>/dev/null && fail "second revoke succeeded"
curl -sf "${AUTH[@]}" "$API/api/v1/certificates/$SERIAL" | jq -e '.status == "revoked" and .revocation.reason_code == 1' >/dev/null \
    || fail "revocation not visible in the API"
[[ "$(curl -sf "${AUTH[@]}" "$API/api/v1/certificates?status=revoked" | jq '.items | length')" == 1 ]] || fail "status filter"
"$RAMPART" audit verify --config "$DIR/rampart.toml" | matches "^audit log intact" || fail "rampart audit verify"
"$RAMPART" policy check --config "$DIR/rampart.toml" --template server --csr "$WORK/ec256.csr" | matches "^APPROVED" \
    || fail "rampart policy check on an allowed CSR"
RAMPART_API_KEY=rpk_000000000000_nope "$RAMPART" certs list --config "$DIR/rampart.toml" 2>/dev/null && fail "CLI accepted a bad key"
unset RAMPART_API_KEY
pass "rampart certs list/show/export/revoke, audit verify and policy check work against the running daemon"

# Bad input: the API's JSON errors, nothing issued.
openssl req -new -newkey rsa:1024 -nodes -keyout /dev/null -subj "/CN=weak.example" \
    -addext "subjectAltName=DNS:weak.example" -out "$WORK/weak.csr" 2>/dev/null
[[ "$(enroll "$WORK/weak.csr" server)" == 403 ]] || fail "RSA-1024 accepted"
jq -e '.rule == "rsa_key_too_small" and .layer == "template"' "$WORK/resp.json" >/dev/null || fail "RSA-1024: $(cat "$WORK/resp.json")"
echo "not a csr" >"$WORK/garbage.csr"
[[ "$(enroll "$WORK/garbage.csr" server)" == 400 ]] || fail "garbage CSR not refused with 400"
jq -e '.error == "bad_csr"' "$WORK/resp.json" >/dev/null || fail "garbage CSR: $(cat "$WORK/resp.json")"
[[ "$(enroll "$WORK/ec256.csr" no-such-template)" == 403 ]] || fail "unknown template accepted"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout /dev/null -subj "/CN=www.google.com" \
    -addext "subjectAltName=DNS:www.google.com" -out "$WORK/public.csr" 2>/dev/null
[[ "$(enroll "$WORK/public.csr" server)" == 403 ]] || fail "a public name outside the policy was accepted"
if "$RAMPART" policy check --config "$DIR/rampart.toml" --api-key "$KEY" --template server --csr "$WORK/public.csr" >"$WORK/check.out"; then
    fail "policy check approved a foreign name"
fi
grep -q "^DENIED by names rule identifier_not_allowed" "$WORK/check.out" || fail "policy check: $(cat "$WORK/check.out")"
status="$(curl -s -o "$WORK/resp.json" -w '%{http_code}' "$API/api/v1/certificates")"
[[ "$status" == 401 ]] && jq -e '.error == "unauthorized"' "$WORK/resp.json" >/dev/null || fail "no key: $status"
head -c 200000 /dev/zero | tr '\0' ' ' >"$WORK/big.json"
status="$(curl -s -o "$WORK/resp.json" -w '%{http_code}' "${AUTH[@]}" --data-binary @"$WORK/big.json" "$API/api/v1/enrollments")"
[[ "$status" == 413 ]] && jq -e '.error == "body_too_large"' "$WORK/resp.json" >/dev/null || fail "large body: $status"
[[ "$(curl -sf "${AUTH[@]}" "$API/api/v1/certificates?owner=admin" | jq '.items | length')" == 4 ]] \
    || fail "refused requests left certificates behind"
pass "bad input (RSA-1024, garbage, unknown template, foreign name, no key, 200 kB body) refused with JSON errors"

# Metrics.
curl -sf "$API/metrics" >"$WORK/metrics.txt" || fail "/metrics"
grep -q 'rampart_issuance_duration_seconds_count{protocol="api"} 4' "$WORK/metrics.txt" || fail "issuance histogram"
grep -q 'rampart_policy_decisions_total{protocol="api",outcome="denied",layer="template"} 1' "$WORK/metrics.txt" \
    || fail "decision counter"
grep -q 'rampart_http_requests_total{listener="api",method="POST",status="201"} 4' "$WORK/metrics.txt" || fail "request counter"
pass "/metrics exposes requests, decisions and the issuance latency histogram"

# A restart reuses the CA, the store and the key.
BEFORE="$(sha256sum "$BUNDLE")"
stop_rampart
start_rampart "$DIR/rampart.toml"
[[ "$(sha256sum "$BUNDLE")" == "$BEFORE" ]] || fail "the CA changed across a restart"
grep -q "rpk_" "$WORK/rampart.out" && fail "a restart printed a new API key"
curl -sf "${AUTH[@]}" "$API/api/v1/certificates/$SERIAL" | jq -e '.status == "revoked"' >/dev/null || fail "state lost across restart"
stop_rampart
pass "restart reuses CA, store and API key"
