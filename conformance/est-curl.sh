#!/usr/bin/env bash
# Conformance: EST (RFC 7030) the way a device does it, with curl and openssl only:
# cacerts → simpleenroll with HTTP Basic → verify against cacerts → simplereenroll with the
# issued certificate as TLS client certificate → the RFC's error statuses.
source "$(dirname "$0")/lib.sh"

DIR="$WORK/ra"
API_PORT="$(free_port)"
EST_PORT="$(free_port)"
mkdir -p "$DIR"
HASH="$(printf 's3cret' | "$RAMPART" hash-password)" || fail "hash-password"
# A device manufacturer's CA and one device's birth certificate (IDevID), made here.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/mfg.key" -subj "/CN=Example Devices Mfg CA" \
    -days 3650 -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" -out "$WORK/mfg.pem" 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/idevid.key" -subj "/CN=sn-000123" \
    -out "$WORK/idevid.csr" 2>/dev/null
printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n' >"$WORK/idevid.ext"
openssl x509 -req -in "$WORK/idevid.csr" -CA "$WORK/mfg.pem" -CAkey "$WORK/mfg.key" -CAcreateserial -days 3650 \
    -extfile "$WORK/idevid.ext" -out "$WORK/idevid.pem" 2>/dev/null || fail "making the IDevID"
cat >"$DIR/rampart.toml" <<TOML
[server]
data_dir = "$DIR"
[api]
listen = "127.0.0.1:$API_PORT"
[est.bootstrap.example-mfg]
ca_file = "$WORK/mfg.pem"
roles = ["admin"]
subject_cn_pattern = "sn-*"
[est.users.device-7]
password_hash = "$HASH"
roles = ["admin"]
TOML
grep -q 's3cret' "$DIR/rampart.toml" && fail "the password itself ended up in the config"
API="http://127.0.0.1:$API_PORT"
export RAMPART__EST__LISTEN="127.0.0.1:$EST_PORT"
start_rampart "$DIR/rampart.toml"
grep -q "EST .*https://127.0.0.1:$EST_PORT/.well-known/est" "$WORK/rampart.out" || fail "serve did not print the EST URL"
EST="https://localhost:$EST_PORT/.well-known/est"
CURL=(curl -s --cacert "$DIR/ca-bundle.pem")

# cacerts: base64 certs-only PKCS#7 with the issuing CA and the root.
"${CURL[@]}" -o "$WORK/cacerts.b64" -w '%{http_code} %{content_type}' "$EST/cacerts" >"$WORK/status" || fail "cacerts"
grep -q "^200 application/pkcs7-mime" "$WORK/status" || fail "cacerts answered $(cat "$WORK/status")"
base64 -d "$WORK/cacerts.b64" | openssl pkcs7 -inform DER -print_certs -out "$WORK/cacerts.pem" || fail "cacerts is not PKCS#7"
[[ "$(grep -c 'BEGIN CERTIFICATE' "$WORK/cacerts.pem")" == 2 ]] || fail "cacerts does not hold issuing CA + root"
pass "cacerts: base64 PKCS#7 certs-only with the issuing CA and the root"

# simpleenroll with HTTP Basic.
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/dev.key" -subj "/CN=dev7.test" \
    -addext "subjectAltName=DNS:dev7.test" -outform DER -out "$WORK/dev.csr.der" 2>/dev/null
base64 "$WORK/dev.csr.der" >"$WORK/dev.csr.b64"
enroll_est() { # op curl-args... → status in $WORK/status, body in $WORK/resp
    local op="$1"
    shift
    "${CURL[@]}" -o "$WORK/resp" -w '%{http_code}' -H 'Content-Type: application/pkcs10' "$@" "$EST/$op" >"$WORK/status" \
        || fail "curl $op failed (exit $?)"
}
enroll_est simpleenroll -u device-7:s3cret --data-binary @"$WORK/dev.csr.b64"
[[ "$(cat "$WORK/status")" == 200 ]] || fail "simpleenroll answered $(cat "$WORK/status"): $(cat "$WORK/resp")"
base64 -d "$WORK/resp" | openssl pkcs7 -inform DER -print_certs -out "$WORK/dev.pem" || fail "simpleenroll answer is not PKCS#7"
openssl verify -CAfile "$WORK/cacerts.pem" "$WORK/dev.pem" >/dev/null || fail "the enrolled certificate does not verify against cacerts"
openssl x509 -in "$WORK/dev.pem" -noout -text | matches "TLS Web Client Authentication" || fail "no clientAuth EKU"
pass "simpleenroll with HTTP Basic: certificate verifies against cacerts"

# simplereenroll with the certificate as TLS client certificate.
openssl req -new -key "$WORK/dev.key" -subj "/CN=dev7.test" -addext "subjectAltName=DNS:dev7.test" -outform DER \
    -out "$WORK/re.csr.der" 2>/dev/null
base64 "$WORK/re.csr.der" >"$WORK/re.csr.b64"
enroll_est simplereenroll --cert "$WORK/dev.pem" --key "$WORK/dev.key" --data-binary @"$WORK/re.csr.b64"
[[ "$(cat "$WORK/status")" == 200 ]] || fail "simplereenroll answered $(cat "$WORK/status"): $(cat "$WORK/resp")"
base64 -d "$WORK/resp" | openssl pkcs7 -inform DER -print_certs -out "$WORK/re.pem" || fail "reenroll answer is not PKCS#7"
openssl verify -CAfile "$WORK/cacerts.pem" "$WORK/re.pem" >/dev/null || fail "the renewed certificate does not verify"
[[ "$(openssl x509 -in "$WORK/re.pem" -noout -serial)" != "$(openssl x509 -in "$WORK/dev.pem" -noout -serial)" ]] \
    || fail "simplereenroll returned the old certificate"
pass "simplereenroll with the current certificate as TLS client certificate"

# IDevID bootstrap: the manufacturer certificate authenticates a first enrollment only.
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/ldev.key" -subj "/CN=sn-000123.test" \
    -addext "subjectAltName=DNS:sn-000123.test" -outform DER 2>/dev/null | base64 >"$WORK/ldev.csr.b64"
enroll_est simpleenroll --cert "$WORK/idevid.pem" --key "$WORK/idevid.key" --data-binary @"$WORK/ldev.csr.b64"
[[ "$(cat "$WORK/status")" == 200 ]] || fail "IDevID enrollment answered $(cat "$WORK/status"): $(cat "$WORK/resp")"
base64 -d "$WORK/resp" | openssl pkcs7 -inform DER -print_certs -out "$WORK/ldev.pem" || fail "IDevID enrollment answer"
LDEV_SERIAL="$(openssl x509 -in "$WORK/ldev.pem" -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f')"
OWNER="$(curl -sf -H "Authorization: Bearer $(grep -o 'rpk_[A-Za-z0-9_-]*' "$WORK/rampart.out")" "$API/api/v1/certificates/$LDEV_SERIAL" | jq -r .owner)"
[[ "$OWNER" == "example-mfg:sn-000123" ]] || fail "IDevID enrollment owned by $OWNER"
enroll_est simplereenroll --cert "$WORK/idevid.pem" --key "$WORK/idevid.key" --data-binary @"$WORK/ldev.csr.b64"
[[ "$(cat "$WORK/status")" == 401 ]] || fail "a manufacturer certificate re-enrolled: $(cat "$WORK/status")"
pass "IDevID bootstrap: a manufacturer-CA device certificate enrolls as example-mfg:sn-000123, cannot re-enroll"
# The same manufacturer's certificate for a CN outside the entry's subject_cn_pattern: refused.
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/other.key" -subj "/CN=lab-99" \
    -out "$WORK/other.csr" 2>/dev/null
openssl x509 -req -in "$WORK/other.csr" -CA "$WORK/mfg.pem" -CAkey "$WORK/mfg.key" -CAcreateserial -days 3650 \
    -extfile "$WORK/idevid.ext" -out "$WORK/other.pem" 2>/dev/null || fail "making the second device certificate"
enroll_est simpleenroll --cert "$WORK/other.pem" --key "$WORK/other.key" --data-binary @"$WORK/ldev.csr.b64"
[[ "$(cat "$WORK/status")" == 401 ]] || fail "a device CN outside subject_cn_pattern enrolled: $(cat "$WORK/status")"
pass "IDevID mapping by issuer and subject CN pattern: CN lab-99 does not match sn-* and is refused"

# serverkeygen: rampart makes the key; the answer is multipart/mixed with key and certificate.
"${CURL[@]}" -o "$WORK/keygen.out" -D "$WORK/keygen.headers" -u device-7:s3cret -H 'Content-Type: application/pkcs10' \
    --data-binary @"$WORK/dev.csr.b64" "$EST/serverkeygen" || fail "serverkeygen"
grep -qi '^content-type: multipart/mixed; boundary=' "$WORK/keygen.headers" || fail "serverkeygen is not multipart/mixed"
python3 - "$WORK/keygen.out" "$WORK" <<'PY' || fail "serverkeygen parts"
import base64, sys
body = open(sys.argv[1], "rb").read().decode()
parts = [p for p in body.split("--rampart-est-serverkeygen") if "Content-Type" in p]
assert len(parts) == 2, parts
for part, name in zip(parts, ["key.der", "keygen.p7"]):
    payload = part.split("\r\n\r\n", 1)[1].strip()
    open(f"{sys.argv[2]}/{name}", "wb").write(base64.b64decode(payload))
PY
openssl pkey -inform DER -in "$WORK/key.der" -out "$WORK/key.pem" || fail "serverkeygen key is not PKCS#8"
openssl pkcs7 -inform DER -in "$WORK/keygen.p7" -print_certs -out "$WORK/keygen.pem" || fail "serverkeygen cert part"
[[ "$(openssl x509 -in "$WORK/keygen.pem" -noout -pubkey)" == "$(openssl pkey -in "$WORK/key.pem" -pubout)" ]] \
    || fail "serverkeygen key and certificate do not match"
openssl verify -CAfile "$WORK/cacerts.pem" "$WORK/keygen.pem" >/dev/null || fail "serverkeygen certificate does not verify"
pass "serverkeygen: PKCS#8 key and certificate in multipart/mixed, key matches certificate"

# csrattrs: what the profile wants in a CSR.
"${CURL[@]}" -o "$WORK/attrs.b64" -w '%{http_code}' "$EST/csrattrs" >"$WORK/status" || fail "csrattrs"
[[ "$(cat "$WORK/status")" == 200 ]] || fail "csrattrs answered $(cat "$WORK/status")"
base64 -d "$WORK/attrs.b64" | openssl asn1parse -inform DER | matches "prime256v1" || fail "csrattrs lacks the P-256 curve"
pass "csrattrs: DER CsrAttrs from the template (key algorithms and curves)"

# Errors: the RFC's statuses, nothing issued.
BEFORE="$(curl -sf -H "Authorization: Bearer $(grep -o 'rpk_[A-Za-z0-9_-]*' "$WORK/rampart.out")" "$API/api/v1/certificates?template=client" | jq '.items | length')"
enroll_est simpleenroll --data-binary @"$WORK/dev.csr.b64"
[[ "$(cat "$WORK/status")" == 401 ]] || fail "no credentials: $(cat "$WORK/status")"
"${CURL[@]}" -D - -o /dev/null -H 'Content-Type: application/pkcs10' --data-binary @"$WORK/dev.csr.b64" "$EST/simpleenroll" \
    | matches -i '^www-authenticate: Basic' || fail "401 without WWW-Authenticate"
enroll_est simpleenroll -u device-7:wrong --data-binary @"$WORK/dev.csr.b64"
[[ "$(cat "$WORK/status")" == 401 ]] || fail "wrong password: $(cat "$WORK/status")"
enroll_est simpleenroll -u device-7:s3cret --data-binary 'not base64 at all!'
[[ "$(cat "$WORK/status")" == 400 ]] || fail "bad base64: $(cat "$WORK/status")"
"${CURL[@]}" -o /dev/null -w '%{http_code}' -u device-7:s3cret -H 'Content-Type: text/plain' --data-binary @"$WORK/dev.csr.b64" \
    "$EST/simpleenroll" | matches '^415$' || fail "wrong content type not 415"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout /dev/null -subj "/CN=www.google.com" \
    -addext "subjectAltName=DNS:www.google.com" -outform DER 2>/dev/null | base64 >"$WORK/foreign.b64"
enroll_est simpleenroll -u device-7:s3cret --data-binary @"$WORK/foreign.b64"
[[ "$(cat "$WORK/status")" == 403 ]] && grep -q "not allowed" "$WORK/resp" || fail "foreign name: $(cat "$WORK/status") $(cat "$WORK/resp")"
enroll_est simplereenroll -u device-7:s3cret --data-binary @"$WORK/re.csr.b64"
[[ "$(cat "$WORK/status")" == 401 ]] || fail "reenroll without client certificate: $(cat "$WORK/status")"
"${CURL[@]}" -o /dev/null -w '%{http_code}' -X POST "$EST/fullcmc" | matches '^501$' || fail "fullcmc not 501"
AFTER="$(curl -sf -H "Authorization: Bearer $(grep -o 'rpk_[A-Za-z0-9_-]*' "$WORK/rampart.out")" "$API/api/v1/certificates?template=client" | jq '.items | length')"
[[ "$BEFORE" == "$AFTER" ]] || fail "refused requests issued certificates ($BEFORE → $AFTER)"
pass "errors: 401 (+WWW-Authenticate), 400 bad base64, 415, 403 policy with reason, 501 fullcmc; nothing issued"
stop_rampart

# A CA slower than est.issue_wait_ms (0 here: every issuance is): 202 with Retry-After, and
# the same request sent again gets the certificate (RFC 7030 §4.2.3) — one certificate.
KEY="$(grep -o 'rpk_[A-Za-z0-9_-]*' "$WORK/rampart.out")" || fail "serve printed no API key"
COUNT() { curl -sf -H "Authorization: Bearer $KEY" "$API/api/v1/certificates?template=client" | jq '.items | length'; }
RAMPART__EST__ISSUE_WAIT_MS=0 start_rampart "$DIR/rampart.toml"
BEFORE="$(COUNT)"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/slow.key" -subj "/CN=slow.test" \
    -addext "subjectAltName=DNS:slow.test" -outform DER 2>/dev/null | base64 >"$WORK/slow.csr.b64"
"${CURL[@]}" -D "$WORK/headers" -o "$WORK/resp" -w '%{http_code}' -u device-7:s3cret -H 'Content-Type: application/pkcs10' \
    --data-binary @"$WORK/slow.csr.b64" "$EST/simpleenroll" >"$WORK/status" || fail "curl simpleenroll"
[[ "$(cat "$WORK/status")" == 202 ]] || fail "issue_wait_ms = 0 answered $(cat "$WORK/status"): $(cat "$WORK/resp")"
RETRY="$(tr -d '\r' <"$WORK/headers" | awk -F': ' 'tolower($1) == "retry-after" {print $2}')"
[[ "$RETRY" =~ ^[0-9]+$ ]] || fail "202 without a Retry-After in seconds: $(cat "$WORK/headers")"
for _ in $(seq 50); do
    enroll_est simpleenroll -u device-7:s3cret --data-binary @"$WORK/slow.csr.b64"
    [[ "$(cat "$WORK/status")" == 202 ]] || break
    sleep 0.2
done
[[ "$(cat "$WORK/status")" == 200 ]] || fail "the re-sent request answered $(cat "$WORK/status"): $(cat "$WORK/resp")"
base64 -d "$WORK/resp" | openssl pkcs7 -inform DER -print_certs -out "$WORK/slow.pem" || fail "the re-sent answer is not PKCS#7"
openssl verify -CAfile "$WORK/cacerts.pem" "$WORK/slow.pem" >/dev/null || fail "the delivered certificate does not verify"
openssl x509 -in "$WORK/slow.pem" -noout -subject | matches "slow.test" || fail "the delivered certificate is not for slow.test"
[[ "$(COUNT)" == $((BEFORE + 1)) ]] || fail "the 202 and the re-send made more than one certificate"
pass "issue_wait_ms = 0: simpleenroll answers 202 with Retry-After $RETRY; the re-sent request gets one certificate, which verifies"
stop_rampart
