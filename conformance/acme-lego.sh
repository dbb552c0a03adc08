#!/usr/bin/env bash
# Conformance: lego (Debian's package: the Go ACME client behind Traefik and many scripts)
# against rampart's ACME directory, beside certbot the second real client, and the only one
# here that answers tls-alpn-01 itself. Every name lives in a Knot DNS zone that rampart
# resolves through, so http-01 and tls-alpn-01 are validated by name as in production and
# dns-01 goes through TSIG-signed RFC 2136 updates.
#   - http-01 with an ES256 account and a P-256 key; renew; revoke (keyCompromise)
#   - tls-alpn-01 (RFC 8737) with lego's own TLS responder
#   - dns-01 for the apex and the wildcard, lego's rfc2136 provider updating knotd
#   - RS256 and ES384 accounts with RSA-2048 and P-384 certificate keys
#   - external account binding: a wrong HMAC refused, the right one binds the identity
# Every certificate is checked with openssl verify against rampart's CA bundle.
source "$(dirname "$0")/lib.sh"

command -v lego >/dev/null 2>&1 || fail "lego not found: install the Debian package lego (.ci/run does)"

start_knot legolab.test "http A 127.0.0.1
alpn A 127.0.0.1
rsa A 127.0.0.1
p384 A 127.0.0.1
eab A 127.0.0.1"
HTTP01_PORT="$(free_port)"
TLSALPN01_PORT="$(free_port)"
acme_lab_config "http01_port = $HTTP01_PORT
tlsalpn01_port = $TLSALPN01_PORT
dns_resolver = \"127.0.0.1:$DNS_PORT\""
start_rampart "$DIR/rampart.toml"
ADMIN_KEY="$(grep -o 'rpk_[A-Za-z0-9_-]*' "$WORK/rampart.out")"
# lego trusts the CA bundle through this variable (it has no option for it).
export LEGO_CA_CERTIFICATES="$DIR/ca-bundle.pem"
HTTP=(--http --http.port "127.0.0.1:$HTTP01_PORT")

# lego_at <dir> <args…> — lego with its account and certificates in $WORK/<dir>; its output
# in $WORK/<dir>.out.
lego_at() {
    local dir="$1"
    shift
    lego --server "$DIRECTORY" --accept-tos --email ops@example.org --path "$WORK/$dir" "$@" \
        >"$WORK/$dir.out" 2>&1
}

# check_certificate <dir> <name> — lego's certificate for <name> verifies against the CA
# bundle (with the issuer lego saved) and names <name>; prints its serial in lower-case hex.
check_certificate() {
    local crt="$WORK/$1/certificates/${2/\*/_}.crt" issuer="$WORK/$1/certificates/${2/\*/_}.issuer.crt"
    [[ -s "$crt" && -s "$issuer" ]] || fail "lego saved no certificate for $2 in $1"
    openssl verify -CAfile "$DIR/ca-bundle.pem" -untrusted "$issuer" "$crt" >/dev/null \
        || fail "the certificate for $2 does not verify"
    openssl x509 -in "$crt" -noout -ext subjectAltName | matches -F "DNS:$2" \
        || fail "the certificate for $2 does not name it"
    openssl x509 -in "$crt" -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f'
}

# --- http-01: ES256 account, P-256 key (lego's defaults).
lego_at main -d http.legolab.test "${HTTP[@]}" run || fail "lego run (http-01): $(tail -20 "$WORK/main.out")"
FIRST="$(check_certificate main http.legolab.test)"
openssl x509 -in "$WORK/main/certificates/http.legolab.test.crt" -noout -text | matches 'ASN1 OID: prime256v1' \
    || fail "the http-01 certificate's key is not P-256"
jq -r '.registration.body.contact[0]' "$WORK"/main/accounts/*/ops@example.org/account.json | matches -x 'mailto:ops@example.org' \
    || fail "lego's account does not carry the contact rampart returned"
pass "lego run --http (ES256 account) got a P-256 certificate for http.legolab.test that openssl verifies"

# --- Renewal: lego renews when fewer than --days remain.
lego_at main -d http.legolab.test "${HTTP[@]}" renew --days 3650 --no-random-sleep \
    || fail "lego renew: $(tail -20 "$WORK/main.out")"
SECOND="$(check_certificate main http.legolab.test)"
[[ "$FIRST" != "$SECOND" ]] || fail "lego renew did not replace the certificate"
pass "lego renew issued a new certificate ($FIRST -> $SECOND)"

# --- Revocation by the account that ordered it.
lego_at main -d http.legolab.test revoke --reason 1 --keep || fail "lego revoke: $(tail -20 "$WORK/main.out")"
[[ "$(inventory "$SECOND" | cut -d' ' -f1-2)" == "revoked keyCompromise" ]] \
    || fail "after lego revoke the inventory says: $(inventory "$SECOND")"
[[ "$(inventory "$FIRST" | cut -d' ' -f1)" == "valid" ]] || fail "revoking the renewal touched the first certificate"
pass "lego revoke --reason 1 is recorded as keyCompromise in the inventory"

# --- tls-alpn-01: lego answers on its own TLS listener with the acmeIdentifier certificate.
lego_at main -d alpn.legolab.test --tls --tls.port "127.0.0.1:$TLSALPN01_PORT" run \
    || fail "lego run (tls-alpn-01): $(tail -20 "$WORK/main.out")"
check_certificate main alpn.legolab.test >/dev/null
sed 's/\x1b\[[0-9;]*m//g' "$WORK/rampart.err" | matches -E 'ACME challenge valid .*identifier=alpn.legolab.test challenge="?tls-alpn-01' \
    || fail "rampart did not log a valid tls-alpn-01 challenge for alpn.legolab.test"
pass "lego run --tls: rampart validated tls-alpn-01 against lego's responder and issued"

# --- dns-01 through knotd: the apex and its wildcard, one order, two TXT records at one
# name (lego's provider solves them one after the other, by default a minute apart).
RFC2136_NAMESERVER="127.0.0.1:$DNS_PORT" RFC2136_TSIG_KEY="$TSIG_NAME" RFC2136_TSIG_SECRET="$TSIG_SECRET" \
    RFC2136_TSIG_ALGORITHM="hmac-sha256." RFC2136_SEQUENCE_INTERVAL=1 RFC2136_POLLING_INTERVAL=1 lego_at main --dns rfc2136 --dns.resolvers "127.0.0.1:$DNS_PORT" \
    --dns.disable-cp -d legolab.test -d '*.legolab.test' run \
    || fail "lego run (dns-01): $(tail -20 "$WORK/main.out"; tail -10 "$KNOT/knot.log")"
check_certificate main legolab.test >/dev/null
openssl x509 -in "$WORK/main/certificates/legolab.test.crt" -noout -ext subjectAltName | matches -F 'DNS:*.legolab.test' \
    || fail "the dns-01 certificate lacks DNS:*.legolab.test"
UPDATES="$(grep -c '\[legolab.test.\] DDNS, finished' "$KNOT/knot.log" || true)"
((UPDATES >= 2)) || fail "knotd applied $UPDATES dynamic updates, not at least 2: $(tail -20 "$KNOT/knot.log")"
[[ -z "$("${KDIG[@]}" +short _acme-challenge.legolab.test TXT)" ]] || fail "lego left its TXT records at knotd"
pass "lego run --dns rfc2136: legolab.test and *.legolab.test validated through knotd ($UPDATES DDNS updates), records removed"

# --- Other account and certificate key types: RS256 + RSA-2048, ES384 + P-384.
lego_at rsa --key-type rsa2048 -d rsa.legolab.test "${HTTP[@]}" run || fail "lego run --key-type rsa2048: $(tail -20 "$WORK/rsa.out")"
check_certificate rsa rsa.legolab.test >/dev/null
openssl x509 -in "$WORK/rsa/certificates/rsa.legolab.test.crt" -noout -text | matches 'Public-Key: (2048 bit)' \
    || fail "the rsa2048 certificate's key is not RSA-2048"
grep -q 'BEGIN RSA PRIVATE KEY' "$WORK"/rsa/accounts/*/ops@example.org/keys/ops@example.org.key \
    || fail "lego's account key for --key-type rsa2048 is not RSA (the JWS would not be RS256)"
lego_at p384 --key-type ec384 -d p384.legolab.test "${HTTP[@]}" run || fail "lego run --key-type ec384: $(tail -20 "$WORK/p384.out")"
check_certificate p384 p384.legolab.test >/dev/null
openssl x509 -in "$WORK/p384/certificates/p384.legolab.test.crt" -noout -text | matches 'ASN1 OID: secp384r1' \
    || fail "the ec384 certificate's key is not P-384"
openssl ec -in "$WORK"/p384/accounts/*/ops@example.org/keys/ops@example.org.key -noout -text 2>/dev/null | matches 'secp384r1' \
    || fail "lego's account key for --key-type ec384 is not P-384 (the JWS would not be ES384)"
pass "lego with RS256 and ES384 accounts got RSA-2048 and P-384 certificates"

# --- External account binding: the identity and roles of the key, not an anonymous account.
EAB="$(curl -sf -H "Authorization: Bearer $ADMIN_KEY" -H 'Content-Type: application/json' \
    --data '{"identity": "team-lego", "roles": ["acme-demo"]}' "$API/api/v1/acme/eab-keys")" \
    || fail "POST /api/v1/acme/eab-keys failed"
EAB_KID="$(jq -r .key_id <<<"$EAB")"
EAB_HMAC="$(jq -r .hmac_key <<<"$EAB")"
WRONG_HMAC="$(head -c 32 /dev/urandom | base64 -w0 | tr '+/' '-_' | tr -d '=')"
if lego_at eab-wrong --eab --kid "$EAB_KID" --hmac "$WRONG_HMAC" -d eab.legolab.test "${HTTP[@]}" run; then
    fail "lego registered with a wrong EAB HMAC key"
fi
matches -F 'urn:ietf:params:acme:error:unauthorized :: externalAccountBinding' "$WORK/eab-wrong.out" \
    || fail "lego's error for a wrong EAB HMAC does not name the binding: $(tail -5 "$WORK/eab-wrong.out")"
lego_at eab --eab --kid "$EAB_KID" --hmac "$EAB_HMAC" -d eab.legolab.test "${HTTP[@]}" run \
    || fail "lego run with EAB: $(tail -20 "$WORK/eab.out")"
EAB_SERIAL="$(check_certificate eab eab.legolab.test)"
[[ "$(inventory "$EAB_SERIAL")" == "valid - team-lego" ]] \
    || fail "the EAB certificate's inventory record says: $(inventory "$EAB_SERIAL")"
pass "lego --eab: a wrong HMAC is refused; the right one binds the account to team-lego, the certificate's owner"

stop_rampart
stop_knotd || fail "knotd did not exit cleanly on SIGTERM: $(tail -5 "$KNOT/knot.log")"
