#!/usr/bin/env bash
# Conformance: `rampart serve` with no config file, as the README's first command runs it:
# creates ./rampart-data with a CA and prints the API URL, the CA bundle and an API key a
# newcomer can use at once.
source "$(dirname "$0")/lib.sh"

cd "$WORK"
unset RAMPART__ACME__LISTEN RAMPART__EST__LISTEN # this script checks the embedded defaults themselves
API="http://127.0.0.1:9000"
if curl -s -o /dev/null "$API/healthz"; then fail "port 9000 is taken; cannot test the embedded defaults"; fi
for port in 8443 9443; do
    if (echo >/dev/tcp/127.0.0.1/$port) 2>/dev/null; then fail "port $port is taken; cannot test the embedded defaults"; fi
done
start_rampart_default() {
    "$RAMPART" serve >"$WORK/rampart.out" 2>"$WORK/rampart.err" &
    RAMPART_PID=$!
    wait_http "$API/healthz"
}
start_rampart_default
grep -q "http://127.0.0.1:9000/api/v1/" rampart.out || fail "API URL not printed"
grep -q "./rampart-data/ca-bundle.pem" rampart.out || fail "CA bundle path not printed"
grep -q "https://127.0.0.1:8443/acme/default/directory" rampart.out || fail "ACME directory not printed"
grep -q "https://127.0.0.1:9443/.well-known/est" rampart.out || fail "EST URL not printed"
curl -sf --cacert rampart-data/ca-bundle.pem https://localhost:9443/.well-known/est/cacerts | base64 -d \
    | openssl pkcs7 -inform DER -print_certs | matches "BEGIN CERTIFICATE" || fail "EST cacerts not served on the default port"
curl -sf --cacert rampart-data/ca-bundle.pem https://localhost:8443/acme/default/directory | jq -e .newAccount >/dev/null \
    || fail "ACME directory not served over HTTPS with the listener certificate"
KEY="$(grep -o 'rpk_[A-Za-z0-9_-]*' rampart.out)" || fail "no API key printed on first start"
[[ "$(stat -c %a rampart-data)" == 700 ]] || fail "rampart-data is not 0700"
[[ "$(stat -c %a rampart-data/ca/issuing.key.pem)" == 600 ]] || fail "issuing key not 0600"
openssl x509 -in rampart-data/ca-bundle.pem -noout -text | matches "ASN1 OID: prime256v1" || fail "default CA is not P-256"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout /dev/null -subj "/CN=app.localhost" \
    -addext "subjectAltName=DNS:app.localhost" -out app.csr 2>/dev/null
jq -n --rawfile csr app.csr '{csr: $csr, template: "server"}' >body.json
curl -sf -H "Authorization: Bearer $KEY" --data-binary @body.json "$API/api/v1/enrollments" | jq -r .full_chain >app.pem \
    || fail "enrollment on embedded defaults"
openssl verify -CAfile rampart-data/ca-bundle.pem -untrusted app.pem app.pem >/dev/null || fail "verify"
stop_rampart
start_rampart_default
grep -q "rpk_" rampart.out && fail "second start printed a new key"
stop_rampart
pass "serve on embedded defaults: ./rampart-data, P-256 CA, URLs and a working key printed once"
