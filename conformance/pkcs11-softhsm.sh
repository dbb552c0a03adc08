#!/usr/bin/env bash
# Conformance: the issuing CA key in a PKCS#11 token, the operator's way. A SoftHSM2 token
# initialised with softhsm2-util, `rampart init --pkcs11-module … --pkcs11-uri …` (the key
# pair is generated in the token), `rampart serve` with the PIN in RAMPART_PKCS11_PIN,
# enrollment with curl over the admin API and with curl+openssl over EST, `openssl verify`
# of each certificate against the root, the CRL and an OCSP answer verified too, a restart
# that finds the key in the token again, the SCEP RA key moved into the token too
# (`[scep] ra_key`) with micromdm's scepclient enrolling against it before and after an RA
# rotation, a refused PIN stopping the start — and no file on disk holding the issuing CA's
# or the RA's private key, no PIN in any file or log.
source "$(dirname "$0")/lib.sh"

MODULE=/usr/lib/softhsm/libsofthsm2.so
[[ -f "$MODULE" ]] || fail "$MODULE is missing: apt-get install softhsm2 (conformance/install-deps.sh does)"
command -v softhsm2-util >/dev/null 2>&1 || fail "softhsm2-util is missing: apt-get install softhsm2"
command -v scepclient >/dev/null 2>&1 || fail "scepclient is missing: apt-get install scep"

# A token of our own, in a token directory of our own.
export SOFTHSM2_CONF="$WORK/softhsm2.conf"
mkdir -p "$WORK/tokens"
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' "$WORK/tokens" >"$SOFTHSM2_CONF"
PIN="pin-$(openssl rand -hex 6)"
softhsm2-util --init-token --free --label rampart-ca --pin "$PIN" --so-pin "so-$(openssl rand -hex 6)" \
    >"$WORK/softhsm.out" 2>&1 || fail "softhsm2-util --init-token: $(cat "$WORK/softhsm.out")"
pass "SoftHSM2 token rampart-ca initialised"

export RAMPART_PKCS11_PIN="$PIN"
URI="pkcs11:token=rampart-ca;object=issuing-ca;id=%01"
DIR="$WORK/ra"
"$RAMPART" init --dir "$DIR" --pkcs11-module "$MODULE" --pkcs11-uri "$URI" >"$WORK/init.out" 2>"$WORK/init.err" \
    || fail "rampart init: $(cat "$WORK/init.err")"
KEY="$(grep -o 'rpk_[A-Za-z0-9_-]*' "$WORK/init.out")" || fail "init printed no API key"
grep -qF "key = \"$URI\"" "$DIR/rampart.toml" || fail "rampart.toml does not name the token key"
grep -qF "pkcs11_module = \"$MODULE\"" "$DIR/rampart.toml" || fail "rampart.toml does not name the module"
grep -qF "$URI" "$DIR/ca/ca.json" || fail "ca.json does not record the token key"
[[ ! -e "$DIR/ca/issuing.key.pem" ]] || fail "init wrote an issuing key file"
pass "init generated the issuing key in the token and wrote its URI into rampart.toml and ca.json"

# Every private key file rampart wrote, checked against a public key (PEM file).
no_private_key_on_disk() { # <public key PEM> <whose>
    local file keys=0
    while IFS= read -r -d '' file; do
        grep -q 'PRIVATE KEY' "$file" || continue
        keys=$((keys + 1))
        if openssl pkey -in "$file" -pubout 2>/dev/null | cmp -s - "$1"; then
            fail "$file holds the $2 private key"
        fi
    done < <(find "$DIR" -type f -print0)
    ((keys > 0)) || fail "found no private key file at all (root CA): is the check looking in the right place?"
}
openssl x509 -in "$DIR/ca/issuing.cert.pem" -noout -pubkey >"$WORK/issuing.pub"
no_issuing_key_on_disk() { no_private_key_on_disk "$WORK/issuing.pub" "issuing CA's"; }
no_issuing_key_on_disk

API_PORT="$(free_port)"
EST_PORT="$(free_port)"
API="http://127.0.0.1:$API_PORT"
export RAMPART__API__LISTEN="127.0.0.1:$API_PORT"
export RAMPART__EST__LISTEN="127.0.0.1:$EST_PORT"
HASH="$(printf 's3cret' | "$RAMPART" hash-password)" || fail "hash-password"
printf '\n[est.users.device-1]\npassword_hash = "%s"\nroles = ["admin"]\n' "$HASH" >>"$DIR/rampart.toml"
start_rampart "$DIR/rampart.toml"
status="$(curl -s -o "$WORK/health.json" -w '%{http_code}' "$API/healthz")"
[[ "$status" == 200 && "$(jq -r .status "$WORK/health.json")" == ok ]] \
    || fail "/healthz answered $status $(cat "$WORK/health.json") with the key in the token"
pass "rampart serve runs on the token key; /healthz reports it ok"

ROOT="$DIR/ca/root.cert.pem"
ISSUING="$DIR/ca/issuing.cert.pem"
cat "$ROOT" "$ISSUING" >"$WORK/chain.pem"
verify() { # leaf.pem
    openssl verify -CAfile "$ROOT" -untrusted "$ISSUING" "$1" >"$WORK/verify.out" 2>&1 \
        || fail "openssl verify $1: $(cat "$WORK/verify.out")"
}

# The admin API.
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/api.key" -subj "/CN=api.hsm.test" \
    -addext "subjectAltName=DNS:api.hsm.test" -out "$WORK/api.csr" 2>/dev/null
status="$(enroll "$WORK/api.csr" server)"
[[ "$status" == 201 ]] || fail "API enrollment answered $status: $(cat "$WORK/resp.json")"
jq -r .certificate "$WORK/resp.json" >"$WORK/api.pem"
verify "$WORK/api.pem"
pass "API enrollment: the certificate verifies with openssl against the root"

# EST with curl and openssl.
openssl req -new -newkey rsa:2048 -nodes -keyout "$WORK/est.key" -subj "/CN=est.hsm.test" \
    -addext "subjectAltName=DNS:est.hsm.test" -outform DER -out "$WORK/est.csr.der" 2>/dev/null
base64 "$WORK/est.csr.der" >"$WORK/est.csr.b64"
status="$(curl -s --cacert "$DIR/ca-bundle.pem" -o "$WORK/est.resp" -w '%{http_code}' -u device-1:s3cret \
    -H 'Content-Type: application/pkcs10' --data-binary @"$WORK/est.csr.b64" \
    "https://localhost:$EST_PORT/.well-known/est/simpleenroll")"
[[ "$status" == 200 ]] || fail "EST simpleenroll answered $status: $(cat "$WORK/est.resp")"
base64 -d "$WORK/est.resp" | openssl pkcs7 -inform DER -print_certs -out "$WORK/est.pem" \
    || fail "the simpleenroll answer is not PKCS#7"
verify "$WORK/est.pem"
pass "EST simpleenroll: the certificate verifies with openssl against the root"

# The CRL and an OCSP answer, signed in the token too.
CRL_URL="$(grep -o 'http://[^ ]*/crl/local.crl' "$WORK/rampart.out")" || fail "serve printed no CRL URL"
OCSP_URL="$(grep -o 'http://[^ ]*/ocsp' "$WORK/rampart.out")" || fail "serve printed no OCSP URL"
curl -sf -o "$WORK/crl.der" "$CRL_URL" || fail "fetching the CRL"
openssl crl -inform DER -in "$WORK/crl.der" -CAfile "$WORK/chain.pem" -noout >"$WORK/crl.out" 2>&1 \
    || fail "openssl crl: $(cat "$WORK/crl.out")"
grep -q "verify OK" "$WORK/crl.out" || fail "the CRL does not verify: $(cat "$WORK/crl.out")"
openssl ocsp -issuer "$ISSUING" -cert "$WORK/api.pem" -url "$OCSP_URL" -CAfile "$WORK/chain.pem" >"$WORK/ocsp.out" 2>&1 \
    || fail "openssl ocsp: $(cat "$WORK/ocsp.out")"
grep -q "Response verify OK" "$WORK/ocsp.out" || fail "the OCSP answer does not verify: $(cat "$WORK/ocsp.out")"
grep -q "api.pem: good" "$WORK/ocsp.out" || fail "the OCSP answer is not good: $(cat "$WORK/ocsp.out")"
pass "the CRL and an OCSP answer verify against the CA"

# A restart finds the key in the token again.
stop_rampart
start_rampart "$DIR/rampart.toml"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-384 -nodes -keyout "$WORK/again.key" -subj "/CN=again.hsm.test" \
    -addext "subjectAltName=DNS:again.hsm.test" -out "$WORK/again.csr" 2>/dev/null
status="$(enroll "$WORK/again.csr" server)"
[[ "$status" == 201 ]] || fail "enrollment after the restart answered $status: $(cat "$WORK/resp.json")"
jq -r .certificate "$WORK/resp.json" >"$WORK/again.pem"
verify "$WORK/again.pem"
stop_rampart
pass "after a restart the token key signs again"

# The SCEP RA key moves into the token: `init` made it a key file; with [scep] ra_key set,
# the next start generates an RSA-2048 key in the token and has the CA certify it, and the
# old file is no longer used (the operator deletes it, as rampart's warning says).
RA_URI="pkcs11:token=rampart-ca;object=scep-ra"
sed -i "s|^ra_key = \"\"|ra_key = \"$RA_URI\"|" "$DIR/rampart.toml"
grep -qF "ra_key = \"$RA_URI\"" "$DIR/rampart.toml" || fail "could not set [scep] ra_key in rampart.toml"
printf '\n[scep.profiles.token]\ntemplate = "client"\nidentity = "scep-token"\nroles = ["admin"]\nchallenge_hash = "%s"\n' \
    "$HASH" >>"$DIR/rampart.toml"
SCEP_PORT="$(free_port)"
export RAMPART__SCEP__LISTEN="127.0.0.1:$SCEP_PORT"
SCEP="http://127.0.0.1:$SCEP_PORT/scep/token"
start_rampart "$DIR/rampart.toml"
grep -q "no longer used" "$WORK/rampart.err" || fail "no warning about the RA key file the token replaced"
rm -f "$DIR/ca/scep-ra.key.pem"
jq -e --arg uri "$RA_URI" '.configured == $uri and .key == $uri' "$DIR/ca/scep-ra.json" >/dev/null \
    || fail "scep-ra.json does not record the token key: $(cat "$DIR/ca/scep-ra.json")"
status="$(curl -s -o "$WORK/health.json" -w '%{http_code}' "$API/healthz")"
[[ "$status" == 200 ]] || fail "/healthz answered $status $(cat "$WORK/health.json") with the RA key in the token"

# ra_cert <name> — GetCACert's RSA certificate (the RA) in $WORK/<name>.pem, its public key
# in $WORK/<name>.pub; sets RA_FP (its SHA-256 fingerprint, for scepclient).
ra_cert() {
    local pem
    curl -sf -o "$WORK/$1.p7" "$SCEP?operation=GetCACert" || fail "GetCACert"
    openssl pkcs7 -inform DER -in "$WORK/$1.p7" -print_certs -out "$WORK/$1.all.pem" || fail "GetCACert is not DER PKCS#7"
    split_pems "$WORK/$1.all.pem" "$WORK/$1.cert"
    for pem in "$WORK/$1.cert."*.pem; do
        if openssl x509 -in "$pem" -noout -text | matches 'Public Key Algorithm: rsaEncryption'; then
            cp "$pem" "$WORK/$1.pem"
        fi
    done
    [[ -f "$WORK/$1.pem" ]] || fail "GetCACert holds no RSA RA certificate"
    openssl x509 -in "$WORK/$1.pem" -noout -text | matches 'Public-Key: (2048 bit)' || fail "the RA key is not RSA 2048"
    verify "$WORK/$1.pem"
    openssl x509 -in "$WORK/$1.pem" -noout -pubkey >"$WORK/$1.pub"
    RA_FP="$(openssl x509 -in "$WORK/$1.pem" -noout -fingerprint -sha256 | cut -d= -f2 | tr -d :)"
}
# scep_enroll <run> <cn> — micromdm's scepclient (single DES, SHA-1: the token decrypts and
# signs) with the profile's static challenge; verifies the certificate it got.
scep_enroll() {
    mkdir -p "$WORK/$1"
    timeout 60 scepclient -debug -server-url "$SCEP" -ca-fingerprint "$RA_FP" -private-key "$WORK/$1/key.pem" \
        -certificate "$WORK/$1/cert.pem" -cn "$2" -challenge s3cret >"$WORK/$1/out" 2>&1 \
        || fail "scepclient against the token-held RA: $(tail -5 "$WORK/$1/out")"
    openssl x509 -in "$WORK/$1/cert.pem" -noout -subject -nameopt RFC2253 | matches "CN=$2" \
        || fail "scepclient's certificate is not for CN $2"
    verify "$WORK/$1/cert.pem"
    [[ "$(openssl x509 -in "$WORK/$1/cert.pem" -noout -pubkey)" == "$(openssl pkey -in "$WORK/$1/key.pem" -pubout)" ]] \
        || fail "the certificate is not for scepclient's key"
}
ra_cert ra1
[[ "$(openssl x509 -in "$WORK/ra1.pem" -noout -serial)" != "$(openssl x509 -in "$DIR/ca/scep-ra.cert.pem" -noout -serial 2>/dev/null || true)" ]] \
    && fail "GetCACert serves another RA than scep-ra.cert.pem"
scep_enroll scep1 scep1.hsm.test
no_private_key_on_disk "$WORK/ra1.pub" "SCEP RA's"
[[ ! -e "$DIR/ca/scep-ra.key.pem" ]] || fail "an RA key file exists with the RA key in the token"
pass "SCEP RA key in the token: scepclient enrolls (envelope decrypted, CertRep signed by the token), no RA key file"

# Rotation: a new key in the token under scep-ra-<unix time>; the old one stays there.
AUTH=(-H "Authorization: Bearer $KEY")
status="$(curl -s -o "$WORK/rotate.json" -w '%{http_code}' -X POST "${AUTH[@]}" "$API/api/v1/scep/ra/rotate")"
[[ "$status" == 201 ]] || fail "POST scep/ra/rotate answered $status: $(cat "$WORK/rotate.json")"
jq -e --arg uri "$RA_URI" '.configured == $uri and (.key | test("^pkcs11:token=rampart-ca;object=scep-ra-[0-9]+$"))' \
    "$DIR/ca/scep-ra.json" >/dev/null || fail "scep-ra.json after the rotation: $(cat "$DIR/ca/scep-ra.json")"
ra_cert ra2
cmp -s "$WORK/ra1.pub" "$WORK/ra2.pub" && fail "the rotated RA has the old key"
scep_enroll scep2 scep2.hsm.test
no_private_key_on_disk "$WORK/ra2.pub" "rotated SCEP RA's"
[[ ! -e "$DIR/ca/scep-ra.key.pem" ]] || fail "the rotation wrote an RA key file"
stop_rampart
pass "RA rotation generates a new token key ($(jq -r .key "$DIR/ca/scep-ra.json" | sed 's/.*object=//')); scepclient enrolls against it"

# A PIN the token refuses stops the start, with a clear message that does not echo it.
if RAMPART_PKCS11_PIN="wrong-$PIN" "$RAMPART" serve --config "$DIR/rampart.toml" >"$WORK/wrong.out" 2>"$WORK/wrong.err"; then
    fail "rampart served with a wrong PIN"
fi
grep -q "refused the PIN" "$WORK/wrong.err" || fail "no clear error for a refused PIN: $(tail -3 "$WORK/wrong.err")"
grep -qF "wrong-$PIN" "$WORK/wrong.err" && fail "the error message shows the PIN"
pass "a refused PIN stops the start with a clear error"

# No file and no log holds the issuing key or the PIN.
no_issuing_key_on_disk
if grep -rqF "$PIN" "$DIR" "$WORK/init.out" "$WORK/init.err" "$WORK/rampart.out" "$WORK/rampart.err"; then
    fail "the PIN is written somewhere"
fi
pass "no file holds the issuing CA's private key, no file or log the PIN"
