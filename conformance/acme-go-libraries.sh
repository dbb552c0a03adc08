#!/usr/bin/env bash
# Conformance: the two Go ACME libraries behind widely deployed clients, driven by small
# programs in conformance/go/ built offline from Debian's packages (Go 1.19, GOPATH mode):
#   - golang.org/x/crypto/acme as cert-manager uses it (go/certmanager-xcrypto), against a
#     profile that requires external account binding (cert-manager with a private CA):
#     RS256 account; the directory says externalAccountRequired; onlyReturnExisting finds no
#     account; registering without EAB is refused with externalAccountRequired, with a wrong
#     HMAC with unauthorized; the right key binds, and a second account cannot reuse it;
#     http-01 through AuthorizeOrder, GetAuthorization, Accept, WaitAuthorization,
#     WaitOrder, CreateOrderCert(bundle=true): the certificate comes as
#     application/pem-certificate-chain, leaf plus issuers, FetchCert agrees; RevokeCert
#     (cessationOfOperation) by the account after a "restart" shows in the inventory, and
#     revoking again is answered alreadyRevoked.
#   - github.com/mholt/acmez as Caddy uses it (go/caddy-acmez): an ES256 account, one
#     order for two names by http-01 and one for two names by tls-alpn-01 (RFC 8737, the
#     challenge certificate from acmez.TLSALPN01ChallengeCert), P-256 certificate keys.
# Both programs trust rampart through an http.Client whose RootCAs is ca-bundle.pem (no
# InsecureSkipVerify), and fail on any 5xx rampart answers even when the library retried it
# (the recording transport they share, go/acmetest).
# Every name lives in a Knot DNS zone rampart resolves through (dns_resolver), so it
# validates by name: the responders check the Host header and SNI of its requests.
# Every certificate is checked with openssl verify against rampart's CA bundle.
source "$(dirname "$0")/lib.sh"

GOCODE=/usr/share/gocode/src
command -v go >/dev/null 2>&1 || fail "go not found: install the Debian package golang-go (install-deps.sh does)"
[[ -d "$GOCODE/golang.org/x/crypto/acme" ]] \
    || fail "$GOCODE/golang.org/x/crypto/acme missing: install the Debian package golang-golang-x-crypto-dev"
[[ -d "$GOCODE/github.com/mholt/acmez" ]] \
    || fail "$GOCODE/github.com/mholt/acmez missing: install the Debian package golang-github-mholt-acmez-dev"

# go_build <program> — conformance/go/<program> into $WORK/bin, offline: GOPATH mode over
# Debian's /usr/share/gocode, no module proxy, build cache kept between runs. The programs'
# shared code, conformance/go/acmetest, is on $WORK/gopath as import path "acmetest".
mkdir -p "$WORK/gopath/src" && ln -s "$ROOT/conformance/go/acmetest" "$WORK/gopath/src/acmetest" \
    || fail "cannot link conformance/go/acmetest into $WORK/gopath"
go_build() {
    (cd "$ROOT/conformance/go/$1" \
        && env GO111MODULE=off GOPROXY=off GOFLAGS= CGO_ENABLED=0 GOPATH="$WORK/gopath:/usr/share/gocode" \
            GOCACHE="$HOME/.cache/rampart-go/build" go build -o "$WORK/bin/$1" .) >"$WORK/go-build.out" 2>&1 \
        || fail "go build conformance/go/$1: $(tail -20 "$WORK/go-build.out")"
}
go_build certmanager-xcrypto
go_build caddy-acmez

start_knot golibs.test "cm A 127.0.0.1
web1 A 127.0.0.1
web2 A 127.0.0.1
tls1 A 127.0.0.1
tls2 A 127.0.0.1"
HTTP01_PORT="$(free_port)"
TLSALPN01_PORT="$(free_port)"
# `default` lets anyone register (acmez); `cert-manager` requires external account binding.
acme_lab_config "http01_port = $HTTP01_PORT
tlsalpn01_port = $TLSALPN01_PORT
dns_resolver = \"127.0.0.1:$DNS_PORT\"
$(acme_eab_profile cert-manager)"
start_rampart "$DIR/rampart.toml"
ADMIN_KEY="$(grep -o 'rpk_[A-Za-z0-9_-]*' "$WORK/rampart.out")"
CM_DIRECTORY="https://localhost:$ACME_PORT/acme/cert-manager/directory"

sans() { openssl x509 -in "$1" -noout -ext subjectAltName | tail -n +2 | tr -d ' '; }

# --- x/crypto/acme as cert-manager: EAB registration, http-01, CreateOrderCert, revocation.
EAB="$(curl -sf -H "Authorization: Bearer $ADMIN_KEY" -H 'Content-Type: application/json' \
    --data '{"identity": "team-certmanager", "roles": ["acme-demo"]}' "$API/api/v1/acme/eab-keys")" \
    || fail "POST /api/v1/acme/eab-keys failed"
WRONG_HMAC="$(head -c 32 /dev/urandom | base64 -w0 | tr '+/' '-_' | tr -d '=')"
CM=("$WORK/bin/certmanager-xcrypto" -directory "$CM_DIRECTORY" -ca "$DIR/ca-bundle.pem" -state "$WORK/cm")
"${CM[@]}" issue -eab-kid "$(jq -r .key_id <<<"$EAB")" -eab-hmac "$(jq -r .hmac_key <<<"$EAB")" \
    -wrong-hmac "$WRONG_HMAC" -name cm.golibs.test -http01 "127.0.0.1:$HTTP01_PORT" \
    >"$WORK/cm-issue.out" 2>"$WORK/cm-issue.err" \
    || fail "x/crypto/acme issue: $(tail -5 "$WORK/cm-issue.out"; tail -25 "$WORK/cm-issue.err")"
matches -E '^refused registration without EAB: [0-9]+ urn:ietf:params:acme:error:externalAccountRequired ' "$WORK/cm-issue.out" \
    || fail "no EAB: $(grep refused "$WORK/cm-issue.out")"
matches -E '^refused registration with a wrong EAB HMAC: 403 urn:ietf:params:acme:error:unauthorized ' "$WORK/cm-issue.out" \
    || fail "wrong EAB HMAC: $(grep refused "$WORK/cm-issue.out")"
matches -E '^refused a second account with the same EAB key: 403 urn:ietf:params:acme:error:unauthorized ' "$WORK/cm-issue.out" \
    || fail "a second account with a bound EAB key: $(grep refused "$WORK/cm-issue.out")"
pass "x/crypto/acme: externalAccountRequired without EAB, unauthorized with a wrong HMAC; the right key registers an RS256 account, and no second account may reuse it"

CM_SERIAL="$(verify_issued "$WORK/cm/cert.pem" "$WORK/cm/chain.pem")"
[[ "$CM_SERIAL" == "$(sed -n 's/^serial //p' "$WORK/cm-issue.out")" ]] || fail "openssl and the library disagree on the serial"
[[ "$(sans "$WORK/cm/cert.pem")" == "DNS:cm.golibs.test" ]] || fail "the cert-manager certificate's SANs: $(sans "$WORK/cm/cert.pem")"
matches -F 'http-01 valid for cm.golibs.test' "$WORK/cm-issue.out" || fail "the http-01 responder saw no request for cm.golibs.test by name"
matches -E '^certificate .*: PEM chain of [2-9] ' "$WORK/cm-issue.out" || fail "CreateOrderCert(bundle=true) gave no PEM chain"
[[ "$(inventory "$CM_SERIAL")" == "valid - team-certmanager" ]] \
    || fail "the cert-manager certificate's inventory record says: $(inventory "$CM_SERIAL")"
pass "x/crypto/acme: http-01 by name, CreateOrderCert fetched an application/pem-certificate-chain that openssl verifies, owned by the EAB identity"

"${CM[@]}" revoke >"$WORK/cm-revoke.out" 2>"$WORK/cm-revoke.err" \
    || fail "x/crypto/acme revoke: $(tail -5 "$WORK/cm-revoke.out"; tail -15 "$WORK/cm-revoke.err")"
[[ "$(inventory "$CM_SERIAL")" == "revoked cessationOfOperation team-certmanager" ]] \
    || fail "after RevokeCert the inventory says: $(inventory "$CM_SERIAL")"
matches -Fx 'revoking again: alreadyRevoked' "$WORK/cm-revoke.out" || fail "a second RevokeCert was not answered alreadyRevoked"
pass "x/crypto/acme: RevokeCert (cessationOfOperation) by the account found by its key is in the inventory; again is alreadyRevoked"

# --- acmez as Caddy: ES256 account, http-01 and tls-alpn-01 orders of two names each.
"$WORK/bin/caddy-acmez" -directory "$DIRECTORY" -ca "$DIR/ca-bundle.pem" -out "$WORK/caddy" \
    -http01 "127.0.0.1:$HTTP01_PORT" -tlsalpn01 "127.0.0.1:$TLSALPN01_PORT" \
    -http-names web1.golibs.test,web2.golibs.test -alpn-names tls1.golibs.test,tls2.golibs.test \
    >"$WORK/caddy.out" 2>"$WORK/caddy.err" \
    || fail "acmez: $(tail -5 "$WORK/caddy.out"; grep -v '^http: ' "$WORK/caddy.err" | tail -25)"
CLEAN_ERR="$(sed 's/\x1b\[[0-9;]*m//g' "$WORK/rampart.err")"
for kind in http-01 tls-alpn-01; do
    crt="$WORK/caddy/$kind/cert.pem"
    serial="$(verify_issued "$crt" "$WORK/caddy/$kind/chain.pem")"
    names=(web1.golibs.test web2.golibs.test)
    [[ "$kind" == tls-alpn-01 ]] && names=(tls1.golibs.test tls2.golibs.test)
    [[ "$(sans "$crt")" == "DNS:${names[0]},DNS:${names[1]}" || "$(sans "$crt")" == "DNS:${names[1]},DNS:${names[0]}" ]] \
        || fail "the acmez $kind certificate's SANs: $(sans "$crt")"
    openssl x509 -in "$crt" -noout -text | matches 'ASN1 OID: prime256v1' || fail "the acmez $kind certificate's key is not P-256"
    for name in "${names[@]}"; do
        matches -E "ACME challenge valid .*identifier=$name challenge=\"?$kind" <<<"$CLEAN_ERR" \
            || fail "rampart did not log a valid $kind challenge for $name"
    done
    inventory "$serial" | matches -E '^valid - acme:' || fail "the acmez $kind certificate's inventory: $(inventory "$serial")"
done
pass "acmez: an ES256 account got a P-256 certificate for web1+web2 by http-01 and one for tls1+tls2 by tls-alpn-01 (TLSALPN01ChallengeCert), both verify"

stop_rampart
stop_knotd || fail "knotd did not exit cleanly on SIGTERM: $(tail -5 "$KNOT/knot.log")"
