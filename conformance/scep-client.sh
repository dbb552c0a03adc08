#!/usr/bin/env bash
# Conformance: SCEP (RFC 8894) the way a device does it, with micromdm's scepclient (Debian
# package scep), curl and openssl: GetCACaps → GetCACert (RA + chain) → enrollment with the
# profile's static challenge → a wrong challenge → a one-time challenge from the admin API,
# consumed on use → a strict profile refusing the client's single DES / SHA-1 → bad input.
# shellcheck source-path=SCRIPTDIR source=lib.sh disable=SC1091
source "$(dirname "$0")/lib.sh"

command -v scepclient >/dev/null || fail "scepclient missing (apt-get install scep)"
scep_lab secret '[scep.profiles.strict]
template = "client"
identity = "scep-strict"
roles = ["admin"]
challenge_hash = "'"$(printf 'secret' | "$RAMPART" hash-password)"'"
legacy_algorithms = false'
STRICT="$SCEP/strict"

# certificate_json <pem> — the API's record of an issued certificate
certificate_json() {
    curl -sf "${AUTH[@]}" "$API/api/v1/certificates/$(openssl x509 -in "$1" -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f')"
}
# split_cacert <der> <prefix> — GetCACert's PKCS#7 into <prefix>.ra.pem (the RSA certificate),
# <prefix>.root.pem (self-signed) and <prefix>.issuing.pem; prints how many certificates it held.
split_cacert() {
    openssl pkcs7 -inform DER -in "$1" -print_certs -out "$2.all.pem" || fail "GetCACert is not DER PKCS#7"
    scep_ca_certs "$2.all.pem" "$2"
}
# scep_enroll <run> <url> <cn> <challenge> — scepclient in $WORK/<run> (its own key, CSR and
# self-signed certificate live there); certificate in $WORK/<run>/cert.pem, output in
# $WORK/<run>/out; returns scepclient's exit status.
scep_enroll() {
    mkdir -p "$WORK/$1"
    timeout 60 scepclient -debug -server-url "$2" -ca-fingerprint "$RA_FP" -private-key "$WORK/$1/key.pem" \
        -certificate "$WORK/$1/cert.pem" -cn "$3" -challenge "$4" >"$WORK/$1/out" 2>&1
}

# GetCACaps: plain text, one capability a line.
curl -s -o "$WORK/caps" -w '%{http_code}' "$SCEP?operation=GetCACaps" >"$WORK/status" || fail "GetCACaps"
[[ "$(cat "$WORK/status")" == 200 ]] || fail "GetCACaps answered $(cat "$WORK/status"): $(cat "$WORK/caps")"
for cap in POSTPKIOperation SHA-256 AES SCEPStandard Renewal; do
    tr -d '\r' <"$WORK/caps" | matches -ixF "$cap" || fail "GetCACaps lacks $cap: $(tr '\n' ' ' <"$WORK/caps")"
done
# GetCACert: DER certs-only PKCS#7 with the RA certificate (RSA), the issuing CA and the root.
curl -s -o "$WORK/cacert.p7" -w '%{http_code} %{content_type}' "$SCEP?operation=GetCACert" >"$WORK/status" || fail "GetCACert"
grep -q "^200 application/x-x509-ca-ra-cert" "$WORK/status" || fail "GetCACert answered $(cat "$WORK/status")"
[[ "$(split_cacert "$WORK/cacert.p7" "$WORK/cacert")" == 3 ]] || fail "GetCACert does not hold exactly RA + issuing CA + root"
cp "$WORK/cacert.ra.pem" "$WORK/ra.pem"
cp "$WORK/cacert.root.pem" "$WORK/root.pem"
cp "$WORK/cacert.issuing.pem" "$WORK/issuing.pem"
openssl x509 -in "$WORK/ra.pem" -noout -text | matches 'Public-Key: (2048 bit)' || fail "the RA key is not RSA 2048"
openssl verify -CAfile "$WORK/root.pem" -untrusted "$WORK/issuing.pem" "$WORK/ra.pem" >/dev/null \
    || fail "the RA certificate does not verify against the chain"
RA_FP="$(openssl x509 -in "$WORK/ra.pem" -noout -fingerprint -sha256 | cut -d= -f2 | tr -d :)"
pass "GetCACaps lists POSTPKIOperation, SHA-256, AES, SCEPStandard, Renewal; GetCACert holds an RSA RA certificate that verifies against issuing CA + root"

# Enrollment with the profile's static challenge.
scep_enroll static "$SCEP" dev1.test secret || fail "scepclient with the static challenge: $(cat "$WORK/static/out")"
openssl x509 -in "$WORK/static/cert.pem" -noout -subject -nameopt RFC2253 | matches 'CN=dev1.test' \
    || fail "the certificate is not for CN dev1.test: $(openssl x509 -in "$WORK/static/cert.pem" -noout -subject)"
openssl verify -CAfile "$WORK/root.pem" -untrusted "$WORK/issuing.pem" "$WORK/static/cert.pem" >/dev/null \
    || fail "the enrolled certificate does not verify against GetCACert's chain"
[[ "$(openssl x509 -in "$WORK/static/cert.pem" -noout -pubkey)" == "$(openssl pkey -in "$WORK/static/key.pem" -pubout)" ]] \
    || fail "the certificate is not for scepclient's key"
certificate_json "$WORK/static/cert.pem" | jq -e '.owner == "scep-default"' >/dev/null \
    || fail "the certificate is not recorded as scep-default's: $(certificate_json "$WORK/static/cert.pem")"
pass "scepclient enrolls with the static challenge: CN dev1.test, its own key, verifies against GetCACert's chain"

# Run again with its key, as from cron: the same transactionID (a hash of the key) and a
# byte-identical CSR (deterministic RSA signatures), first with the certificate file it
# wrote present, then without it (a new self-signed signer): each run is a new enrollment
# with a new certificate, not the first one answered again as if re-sent (which rampart
# did until it compared the requester certificate too).
SERIALS="$(openssl x509 -in "$WORK/static/cert.pem" -noout -serial)"
for run in "with its certificate file" "without its certificate file"; do
    [[ "$run" == "without its certificate file" ]] && mv "$WORK/static/cert.pem" "$WORK/static/cert.before.pem"
    BEFORE="$(count_certs)"
    scep_enroll static "$SCEP" dev1.test secret || fail "scepclient run again $run: $(cat "$WORK/static/out")"
    SERIAL="$(openssl x509 -in "$WORK/static/cert.pem" -noout -serial)"
    grep -qxF "$SERIAL" <<<"$SERIALS" && fail "scepclient run again $run got an earlier certificate back ($SERIAL)"
    [[ "$(count_certs)" == $((BEFORE + 1)) ]] || fail "scepclient run again $run: $(($(count_certs) - BEFORE)) certificates issued, not one"
    [[ "$(openssl x509 -in "$WORK/static/cert.pem" -noout -pubkey)" == "$(openssl pkey -in "$WORK/static/key.pem" -pubout)" ]] \
        || fail "scepclient run again $run: the certificate is not for its key"
    SERIALS+=$'\n'"$SERIAL"
done
pass "scepclient run again with its key (the same transactionID and CSR), with and then without its certificate file: a new certificate each time"

# A wrong challenge: FAILURE, nothing issued.
BEFORE="$(count_certs)"
if scep_enroll wrong "$SCEP" dev3.test wrong; then fail "a wrong challenge enrolled"; fi
grep -Eqi 'failInfo|FAILURE' "$WORK/wrong/out" || fail "a wrong challenge failed without a SCEP FAILURE: $(cat "$WORK/wrong/out")"
[[ "$(count_certs)" == "$BEFORE" ]] || fail "a wrong challenge issued a certificate ($BEFORE → $(count_certs))"
[[ -s "$WORK/wrong/cert.pem" ]] && fail "scepclient wrote a certificate for a wrong challenge"
pass "a wrong challenge: scepclient gets FAILURE ($(grep -o 'failInfo: *[A-Za-z0-9]*' "$WORK/wrong/out" | head -1)), nothing issued"

# A one-time challenge minted by the admin API for one device and its names.
jq -n '{profile: "default", identity: "device-42", names: ["dev42.test"], valid_for_seconds: 600}' >"$WORK/challenge.req"
curl -s -o "$WORK/challenge.json" -w '%{http_code}' "${AUTH[@]}" -H 'Content-Type: application/json' \
    --data-binary @"$WORK/challenge.req" "$API/api/v1/scep/challenges" >"$WORK/status" || fail "POST scep/challenges"
[[ "$(cat "$WORK/status")" == 201 ]] || fail "POST scep/challenges answered $(cat "$WORK/status"): $(cat "$WORK/challenge.json")"
jq -e '(.challenge | type == "string" and length > 0) and (.expires_at | type == "string") and .profile == "default"
    and .identity == "device-42" and .names == ["dev42.test"]' "$WORK/challenge.json" >/dev/null \
    || fail "POST scep/challenges: $(cat "$WORK/challenge.json")"
CHALLENGE="$(jq -r .challenge "$WORK/challenge.json")"
scep_enroll once "$SCEP" dev42.test "$CHALLENGE" || fail "scepclient with a one-time challenge: $(cat "$WORK/once/out")"
openssl verify -CAfile "$WORK/root.pem" -untrusted "$WORK/issuing.pem" "$WORK/once/cert.pem" >/dev/null \
    || fail "the one-time enrollment does not verify against GetCACert's chain"
openssl x509 -in "$WORK/once/cert.pem" -noout -ext subjectAltName | matches 'DNS:dev42.test' \
    || fail "the one-time enrollment lacks DNS:dev42.test: $(openssl x509 -in "$WORK/once/cert.pem" -noout -ext subjectAltName)"
certificate_json "$WORK/once/cert.pem" | jq -e '.owner == "device-42"' >/dev/null \
    || fail "the one-time enrollment is not recorded as device-42's: $(certificate_json "$WORK/once/cert.pem")"
BEFORE="$(count_certs)"
if scep_enroll replay "$SCEP" dev42.test "$CHALLENGE"; then fail "a one-time challenge enrolled twice"; fi
cmp -s "$WORK/once/key.pem" "$WORK/replay/key.pem" && fail "the replay did not use a new key"
grep -Eqi 'failInfo|FAILURE' "$WORK/replay/out" || fail "the replayed challenge failed without a SCEP FAILURE: $(cat "$WORK/replay/out")"
[[ "$(count_certs)" == "$BEFORE" ]] || fail "a replayed challenge issued a certificate ($BEFORE → $(count_certs))"
pass "a one-time challenge from the API enrolls dev42.test as device-42; the same challenge with a new key fails, nothing issued"

# The strict profile refuses single DES and SHA-1, which this client always sends.
curl -sf -o "$WORK/strict.p7" "$STRICT?operation=GetCACert" || fail "GetCACert on the strict profile"
split_cacert "$WORK/strict.p7" "$WORK/strict" >/dev/null
RA_FP="$(openssl x509 -in "$WORK/strict.ra.pem" -noout -fingerprint -sha256 | cut -d= -f2 | tr -d :)"
BEFORE="$(count_certs)"
if scep_enroll strict "$STRICT" dev5.test secret; then fail "the strict profile accepted single DES / SHA-1"; fi
grep -Eq 'badAlg|failInfo: *0\b' "$WORK/strict/out" \
    || fail "the strict profile did not answer FAILURE badAlg: $(cat "$WORK/strict/out")"
[[ "$(count_certs)" == "$BEFORE" ]] || fail "the strict profile issued a certificate ($BEFORE → $(count_certs))"
pass "the strict profile refuses scepclient's single DES / SHA-1 request with FAILURE badAlg, nothing issued"

# Bad input: HTTP statuses, not 500s.
STATUS="$(curl -s -o "$WORK/resp" -w '%{http_code}' -H 'Content-Type: application/x-pki-message' \
    --data-binary 'not a pkiMessage' "$SCEP?operation=PKIOperation")"
[[ "$STATUS" == 400 ]] || fail "a garbage PKIOperation answered $STATUS: $(head -c 300 "$WORK/resp")"
STATUS="$(curl -s -o "$WORK/resp" -w '%{http_code}' "$SCEP/nope?operation=GetCACaps")"
[[ "$STATUS" == 404 ]] || fail "an unknown profile answered $STATUS: $(head -c 300 "$WORK/resp")"
pass "bad input: garbage PKIOperation 400, unknown profile 404"
stop_rampart

# A CA slower than scep.issue_wait_ms (0 here: every issuance is): PENDING, and the device
# gets its certificate by asking again while the issuance goes on (scepclient re-sends the
# PKCSReq of the same transaction after 30 s), one certificate for both answers.
RAMPART__SCEP__ISSUE_WAIT_MS=0 start_rampart "$DIR/rampart.toml"
COUNT_BEFORE="$(count_certs)"
scep_enroll slow "$SCEP" slow1.test secret || fail "scepclient after PENDING: $(cat "$WORK/slow/out")"
grep -q PENDING "$WORK/slow/out" || fail "the enrollment was not answered PENDING: $(cat "$WORK/slow/out")"
openssl x509 -in "$WORK/slow/cert.pem" -noout -subject | matches "slow1.test" \
    || fail "no certificate for slow1.test after PENDING"
[[ "$(count_certs)" == $((COUNT_BEFORE + 1)) ]] || fail "PENDING and the re-send made more than one certificate"
pass "issue_wait_ms = 0: scepclient is answered PENDING, asks again and gets one certificate for CN slow1.test"
stop_rampart
