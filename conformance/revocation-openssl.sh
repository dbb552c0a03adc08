#!/usr/bin/env bash
# Conformance: CRLs and OCSP as relying parties use them, checked by openssl. Certificates
# carry the publish listener's CRL distribution point and OCSP URL; the CRL found there
# verifies against the CA, `openssl verify -crl_check` accepts a valid certificate and
# refuses a revoked one (with its reason), a revocation is visible in the next CRL with a
# higher number, and `openssl ocsp` (POST and GET, with nonce) says good, then revoked.
source "$(dirname "$0")/lib.sh"

DIR="$WORK/ra"
"$RAMPART" init --dir "$DIR" >"$WORK/init.out" 2>"$WORK/init.err" || fail "rampart init: $(cat "$WORK/init.err")"
KEY="$(grep -o 'rpk_[A-Za-z0-9_-]*' "$WORK/init.out")" || fail "init printed no API key"
PORT="$(free_port)"
PUBLISH_PORT="$(free_port)"
export RAMPART__API__LISTEN="127.0.0.1:$PORT"
export RAMPART__PUBLISH__LISTEN="127.0.0.1:$PUBLISH_PORT"
API="http://127.0.0.1:$PORT"
start_rampart "$DIR/rampart.toml"
CRL_URL="http://127.0.0.1:$PUBLISH_PORT/crl/local.crl"
grep -q "CRL .*$CRL_URL" "$WORK/rampart.out" || fail "serve did not print the CRL URL"
cat "$DIR/ca/issuing.cert.pem" "$DIR/ca/root.cert.pem" >"$WORK/chain.pem"

issue() { # name → $WORK/<name>.pem
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/$1.key" -subj "/CN=$1" \
        -addext "subjectAltName=DNS:$1" -out "$WORK/$1.csr" 2>/dev/null
    [[ "$(enroll "$WORK/$1.csr" server)" == 201 ]] || fail "enrolling $1: $(cat "$WORK/resp.json")"
    jq -r .certificate "$WORK/resp.json" >"$WORK/$1.pem"
}
issue good.test
issue bad.test
CDP="$(openssl x509 -in "$WORK/good.test.pem" -noout -ext crlDistributionPoints | grep -o 'URI:.*' | cut -c5-)"
[[ "$CDP" == "$CRL_URL" ]] || fail "the certificate's CRL distribution point is '$CDP', not $CRL_URL"
pass "issued certificates carry the CRL distribution point $CRL_URL"
OCSP_URL="http://127.0.0.1:$PUBLISH_PORT/ocsp"
AIA="$(openssl x509 -in "$WORK/good.test.pem" -noout -ocsp_uri)"
[[ "$AIA" == "$OCSP_URL" ]] || fail "the certificate's OCSP URL is '$AIA', not $OCSP_URL"
ocsp() { # cert-name [extra openssl ocsp args] → status line of the certificate
    openssl ocsp -issuer "$DIR/ca/issuing.cert.pem" -cert "$WORK/$1.pem" -url "$OCSP_URL" \
        -CAfile "$WORK/chain.pem" "${@:2}" >"$WORK/ocsp.out" 2>&1 || fail "openssl ocsp: $(cat "$WORK/ocsp.out")"
    grep -q "Response verify OK" "$WORK/ocsp.out" || fail "the OCSP response does not verify: $(cat "$WORK/ocsp.out")"
    grep -qi "nonce" "$WORK/ocsp.out" && fail "the OCSP nonce was not echoed: $(cat "$WORK/ocsp.out")"
    grep "$WORK/$1.pem:" "$WORK/ocsp.out" | cut -d: -f2 | tr -d ' '
}
[[ "$(ocsp good.test)" == good ]] || fail "OCSP does not say good: $(cat "$WORK/ocsp.out")"
[[ "$(ocsp bad.test -no_nonce -reqout "$WORK/req.der")" == good ]] || fail "OCSP without nonce: $(cat "$WORK/ocsp.out")"
status="$(curl -s -o "$WORK/get.der" -w '%{http_code} %{content_type}' "$OCSP_URL/$(base64 -w0 "$WORK/req.der" | sed 's|/|%2F|g; s|+|%2B|g; s|=|%3D|g')")"
[[ "$status" == "200 application/ocsp-response" ]] || fail "OCSP by GET answered $status"
openssl ocsp -respin "$WORK/get.der" -issuer "$DIR/ca/issuing.cert.pem" -CAfile "$WORK/chain.pem" -resp_text 2>&1 \
    | matches "Cert Status: good" || fail "OCSP by GET: not a good answer"
pass "OCSP (POST with nonce, and GET) answers good, signed by the CA ($OCSP_URL in the AIA)"

fetch() { # → $WORK/crl.pem, prints the CRL number
    curl -sf -o "$WORK/crl.der" -w '%{content_type}' "$CDP" >"$WORK/ctype" || fail "fetching the CRL"
    [[ "$(cat "$WORK/ctype")" == application/pkix-crl ]] || fail "CRL content type $(cat "$WORK/ctype")"
    openssl crl -inform DER -in "$WORK/crl.der" -out "$WORK/crl.pem" || fail "the CRL is not DER"
    openssl crl -in "$WORK/crl.pem" -CAfile "$WORK/chain.pem" -noout 2>&1 | matches "verify OK" \
        || fail "openssl crl does not verify the CRL against the CA"
    openssl crl -in "$WORK/crl.pem" -noout -crlnumber | cut -d= -f2
}
first="$(fetch)"
openssl verify -crl_check -CAfile "$WORK/chain.pem" -CRLfile "$WORK/crl.pem" "$WORK/bad.test.pem" >/dev/null \
    || fail "a valid certificate fails the CRL check"
pass "the CRL verifies against the CA (number $first) and a valid certificate passes -crl_check"

SERIAL="$(openssl x509 -in "$WORK/bad.test.pem" -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f')"
status="$(curl -s -o "$WORK/revoke.json" -w '%{http_code}' -H "Authorization: Bearer $KEY" \
    -H 'Content-Type: application/json' -d '{"reason":"keyCompromise"}' "$API/api/v1/certificates/$SERIAL/revoke")"
[[ "$status" == 200 ]] || fail "revoking answered $status: $(cat "$WORK/revoke.json")"
second="$(fetch)"
(( second > first )) || fail "the CRL number did not grow ($first → $second)"
openssl verify -crl_check -CAfile "$WORK/chain.pem" -CRLfile "$WORK/crl.pem" "$WORK/bad.test.pem" >"$WORK/verify.out" 2>&1 \
    && fail "a revoked certificate passed the CRL check"
grep -q "certificate revoked" "$WORK/verify.out" || fail "unexpected verify output: $(cat "$WORK/verify.out")"
openssl crl -in "$WORK/crl.pem" -noout -text | matches "Key Compromise" || fail "the CRL entry has no reason"
openssl verify -crl_check -CAfile "$WORK/chain.pem" -CRLfile "$WORK/crl.pem" "$WORK/good.test.pem" >/dev/null \
    || fail "the CRL check refuses a certificate that is not revoked"
pass "after revocation: CRL number $first → $second, the revoked certificate fails -crl_check (keyCompromise), the other passes"
[[ "$(ocsp bad.test)" == revoked ]] || fail "OCSP does not say revoked: $(cat "$WORK/ocsp.out")"
grep -q "Reason: keyCompromise" "$WORK/ocsp.out" || fail "the OCSP answer has no reason: $(cat "$WORK/ocsp.out")"
[[ "$(ocsp good.test)" == good ]] || fail "OCSP no longer says good for the other certificate"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/other.key" -subj /CN=other -days 1 \
    -out "$WORK/other.pem" 2>/dev/null
openssl ocsp -issuer "$WORK/other.pem" -cert "$WORK/other.pem" -url "$OCSP_URL" -CAfile "$WORK/chain.pem" >"$WORK/ocsp.out" 2>&1 || true
grep -q "other.pem: unknown" "$WORK/ocsp.out" || fail "a foreign certificate is not unknown: $(cat "$WORK/ocsp.out")"
code="$(curl -s -o "$WORK/junk.der" -w '%{http_code}' -H 'Content-Type: application/ocsp-request' --data-binary 'junk' "$OCSP_URL")"
[[ "$code" == 200 ]] || fail "garbage got HTTP $code"
openssl asn1parse -inform DER -in "$WORK/junk.der" | matches "ENUMERATED.*:01" || fail "garbage is not answered malformedRequest"
pass "after revocation OCSP says revoked (keyCompromise); foreign certificates are unknown; garbage gets malformedRequest"
stop_rampart
