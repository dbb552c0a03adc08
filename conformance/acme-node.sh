#!/usr/bin/env bash
# Conformance: acme-client from the npm registry (publishlab/node-acme-client, the most used
# Node.js ACME client), pinned in conformance/node/package-lock.json and installed with
# `npm ci` into a cache outside the repo ($HOME/.cache/rampart-node), driven step by step by
# conformance/node/acme-client-test.mjs against rampart's ACME directory:
#   - trust: without NODE_EXTRA_CA_CERTS acme-client cannot read the directory; with
#     rampart's CA bundle there it can (TLS verification is never switched off)
#   - account: ES256 createAccount with a contact, getAccountUrl, found again by its key
#     (onlyReturnExisting), updateAccount of the contacts, updateAccountKey to RSA (RS256
#     from then on; the old key finds no account)
#   - client.auto() for two names by http-01, answered by a Node HTTP server on
#     http01_port that checks the Host header; acme-client's own pre-check of the token
#     goes through the same server
#   - the manual flow (createOrder, getAuthorizations, getChallengeKeyAuthorization,
#     verifyChallenge, completeChallenge, waitForValidStatus, finalizeOrder, getCertificate)
#     for the zone apex and its wildcard by dns-01: both TXT records set at Knot DNS by
#     TSIG-signed RFC 2136 updates (knsupdate) and removed afterwards; the wildcard's
#     authorization offers dns-01 only
#   - client.auto() by tls-alpn-01 with acme.crypto.createAlpnCertificate
#   - refusal: a token served with a wrong key authorization; auto() rejects with rampart's
#     detail, challenge, authorization and order end invalid, nothing is issued
#   - revokeCertificate (reason 4) shows as superseded in the inventory; again is refused
#     alreadyRevoked
#   - external account binding on a profile that requires it: refused without EAB
#     (externalAccountRequired) and with a wrong HMAC (unauthorized); the right key
#     registers an ES384 account whose certificate belongs to the EAB identity
#   - ARI: acme-client 5.4.0 has no renewalInfo support; the program reads the window of an
#     issued certificate by hand through the library's HTTP client (RFC 9773 CertID)
# Names live in a Knot DNS zone rampart resolves through (dns_resolver); acme-client's own
# http-01 and dns-01 pre-checks resolve them there too (its tls-alpn-01 pre-check, which
# connects through the system resolver, is skipped). Every certificate is checked with openssl verify against
# rampart's CA bundle, and any 5xx rampart answers fails the step (even when retried).
source "$(dirname "$0")/lib.sh"

for tool in node npm knsupdate; do
    command -v "$tool" >/dev/null 2>&1 || fail "$tool not found (node and npm: Node.js 16 or later; knsupdate: the Debian package knot-dnsutils)"
done

# node_deps — conformance/node's locked dependencies installed with npm ci into
# $NODE_PREFIX (kept between runs; installed again when the lock file changes).
NODE_PREFIX="${RAMPART_NODE_PREFIX:-$HOME/.cache/rampart-node}"
node_deps() {
    local lock="$ROOT/conformance/node/package-lock.json"
    if cmp -s "$lock" "$NODE_PREFIX/.installed-lock.json" && [[ -f "$NODE_PREFIX/node_modules/acme-client/package.json" ]]; then
        return 0
    fi
    mkdir -p "$NODE_PREFIX"
    cp "$ROOT/conformance/node/package.json" "$lock" "$NODE_PREFIX/"
    rm -f "$NODE_PREFIX/.installed-lock.json"
    (cd "$NODE_PREFIX" && npm ci --ignore-scripts --no-audit --no-fund) >"$WORK/npm.out" 2>&1 \
        || fail "npm ci in $NODE_PREFIX: $(tail -20 "$WORK/npm.out")"
    cp "$lock" "$NODE_PREFIX/.installed-lock.json"
}
node_deps
ACME_CLIENT_VERSION="$(jq -r .version "$NODE_PREFIX/node_modules/acme-client/package.json")"
[[ "$ACME_CLIENT_VERSION" == "$(jq -r '.packages["node_modules/acme-client"].version' "$ROOT/conformance/node/package-lock.json")" ]] \
    || fail "$NODE_PREFIX holds acme-client $ACME_CLIENT_VERSION, not the locked version"

start_knot nodelab.test "auto1 A 127.0.0.1
auto2 A 127.0.0.1
alpn A 127.0.0.1
bad A 127.0.0.1
eab A 127.0.0.1"
HTTP01_PORT="$(free_port)"
TLSALPN01_PORT="$(free_port)"
# `default` lets anyone register; `eab` requires external account binding.
acme_lab_config "http01_port = $HTTP01_PORT
tlsalpn01_port = $TLSALPN01_PORT
dns_resolver = \"127.0.0.1:$DNS_PORT\"
$(acme_eab_profile eab)"
start_rampart "$DIR/rampart.toml"
ADMIN_KEY="$(grep -o 'rpk_[A-Za-z0-9_-]*' "$WORK/rampart.out")"

STATE="$WORK/node"
mkdir -p "$STATE"
export NODE_PREFIX STATE ZONE DNS_PORT TSIG_NAME TSIG_SECRET HTTP01_PORT TLSALPN01_PORT
export ACME_DIRECTORY="$DIRECTORY" EAB_DIRECTORY="https://localhost:$ACME_PORT/acme/eab/directory"
# js <step> <args…> — one step of the test program; its output in $WORK/<step>.out.
js() {
    local step="$1"
    node "$ROOT/conformance/node/acme-client-test.mjs" "$@" >"$WORK/$step.out" 2>&1
}
# js_ok <step> <args…> — the step must succeed.
js_ok() { js "$@" || fail "acme-client $1: $(tail -25 "$WORK/$1.out")"; }
# line <step> <key> — the rest of the step's output line that starts with <key>.
line() { sed -n "s/^$2 //;T;p;q" "$WORK/$1.out"; }
sans() { openssl x509 -in "$1" -noout -ext subjectAltName | tail -n +2 | tr -d ' '; }
# same_key <cert> <key> — the certificate is for that private key.
same_key() {
    cmp -s <(openssl x509 -in "$1" -noout -pubkey) <(openssl pkey -in "$2" -pubout) || fail "$1 is not for the key in $2"
}
clean_err() { sed 's/\x1b\[[0-9;]*m//g' "$WORK/rampart.err"; }

# --- Trust: verification is on, the CA bundle is what makes rampart's listener trusted.
(unset NODE_EXTRA_CA_CERTS && js untrusted) || fail "acme-client without the CA bundle: $(tail -5 "$WORK/untrusted.out")"
matches -E '^refused (UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT_LOCALLY|SELF_SIGNED_CERT_IN_CHAIN|DEPTH_ZERO_SELF_SIGNED_CERT): ' "$WORK/untrusted.out" \
    || fail "acme-client without the CA bundle: $(tail -5 "$WORK/untrusted.out")"
export NODE_EXTRA_CA_CERTS="$DIR/ca-bundle.pem"
pass "acme-client $ACME_CLIENT_VERSION (node $(node --version)) refuses rampart's listener without NODE_EXTRA_CA_CERTS: $(line untrusted refused)"

# --- 1. Account: create, find again, update contacts, key rollover.
js_ok account
ACCOUNT_URL="$(line account account | cut -d' ' -f1)"
[[ "$ACCOUNT_URL" == "https://localhost:$ACME_PORT/acme/default/"* ]] || fail "getAccountUrl: '$ACCOUNT_URL'"
[[ "$(line account account)" == "$ACCOUNT_URL alg ES256" ]] || fail "the account's JWS: $(line account account)"
[[ "$(line account found-again)" == "$ACCOUNT_URL" ]] || fail "onlyReturnExisting: $(line account found-again)"
[[ "$(line account contact)" == "mailto:ops@example.org,mailto:node-admin@example.org" ]] \
    || fail "updated contacts: $(line account contact)"
[[ "$(line account key-rollover)" == "RS256 old-key urn:ietf:params:acme:error:accountDoesNotExist" ]] \
    || fail "key rollover: $(line account key-rollover)"
pass "createAccount (ES256, contact) at $ACCOUNT_URL, getAccountUrl, found again by its key, updateAccount set two contacts; updateAccountKey to RSA: the new key finds it, the old one gets accountDoesNotExist"

# --- 2. client.auto(): two names by http-01.
js_ok auto-http01 "$WORK/auto.pem" auto1.nodelab.test auto2.nodelab.test
split_chain "$WORK/auto.pem"
AUTO="$(verify_issued "$WORK/auto.pem.leaf" "$WORK/auto.pem.chain" DNS:auto1.nodelab.test DNS:auto2.nodelab.test)"
[[ "$(sans "$WORK/auto.pem.leaf")" =~ ^DNS:auto[12].nodelab.test,DNS:auto[12].nodelab.test$ ]] \
    || fail "the auto() certificate's SANs: $(sans "$WORK/auto.pem.leaf")"
same_key "$WORK/auto.pem.leaf" "$WORK/auto.pem.key"
for name in auto1.nodelab.test auto2.nodelab.test; do
    [[ "$(line auto-http01 "authz $name offers")" == "dns-01,http-01,tls-alpn-01" ]] \
        || fail "the authorization for $name offers: $(line auto-http01 "authz $name offers")"
    matches -E "^http-01 $name \"node-acme-client/$ACME_CLIENT_VERSION\" 200$" "$WORK/auto-http01.out" \
        || fail "acme-client's own pre-check did not fetch the token for $name: $(grep '^http-01' "$WORK/auto-http01.out")"
    grep "^http-01 $name " "$WORK/auto-http01.out" | grep -v node-acme-client | matches -E ' 200$' \
        || fail "rampart did not fetch the token for $name by name: $(grep '^http-01' "$WORK/auto-http01.out")"
    matches -E "ACME challenge valid .*identifier=$name challenge=\"?http-01" <<<"$(clean_err)" \
        || fail "rampart did not log a valid http-01 challenge for $name"
done
[[ "$(inventory "$AUTO" | cut -d' ' -f1)" == valid ]] || fail "the auto() certificate's inventory: $(inventory "$AUTO")"
pass "client.auto() (RS256 account, P-256 CSR from acme.crypto.createCsr) got auto1+auto2.nodelab.test by http-01 from a Node HTTP server; $(line auto-http01 certificate | cut -d' ' -f2-) certificates, openssl verifies"

# --- 3 and 4. The manual flow, dns-01 through knotd, apex and wildcard in one order.
UPDATES_BEFORE="$(grep -c "\[$ZONE.\] DDNS, finished" "$KNOT/knot.log" || true)"
js_ok manual-dns01 "$WORK/dns.pem" "$ZONE" "*.$ZONE"
[[ "$(line manual-dns01 "authz \*.$ZONE")" == "wildcard true offers dns-01" ]] \
    || fail "the wildcard's authorization: $(line manual-dns01 "authz \*.$ZONE")"
[[ "$(line manual-dns01 "authz $ZONE")" == "wildcard false offers dns-01,http-01,tls-alpn-01" ]] \
    || fail "the apex's authorization: $(line manual-dns01 "authz $ZONE")"
pass "a wildcard order: the authorization for *.$ZONE (identifier $ZONE, wildcard true) offers dns-01 only; the apex's offers dns-01, http-01 and tls-alpn-01"
[[ "$(line manual-dns01 txt-added)" == 2 ]] || fail "the program did not add two TXT records"
[[ "$(line manual-dns01 "authz-valid \*.$ZONE")" == valid && "$(line manual-dns01 "authz-valid $ZONE")" == valid ]] \
    || fail "waitForValidStatus on the authorizations: $(grep '^authz-valid' "$WORK/manual-dns01.out")"
split_chain "$WORK/dns.pem"
DNS_SERIAL="$(verify_issued "$WORK/dns.pem.leaf" "$WORK/dns.pem.chain" "DNS:$ZONE" "DNS:*.$ZONE")"
same_key "$WORK/dns.pem.leaf" "$WORK/dns.pem.key"
openssl x509 -in "$WORK/dns.pem.leaf" -noout -text | matches 'Public-Key: (2048 bit)' || fail "the dns-01 certificate's key is not RSA-2048"
UPDATES="$(($(grep -c "\[$ZONE.\] DDNS, finished" "$KNOT/knot.log" || true) - UPDATES_BEFORE))"
((UPDATES >= 2)) || fail "knotd applied $UPDATES dynamic updates, not the add and the delete: $(tail -10 "$KNOT/knot.log")"
[[ -z "$("${KDIG[@]}" +short "_acme-challenge.$ZONE" TXT)" ]] || fail "the TXT records are still at knotd"
[[ "$(clean_err | grep -cE "ACME challenge valid .*identifier=\*?\.?$ZONE challenge=\"?dns-01")" -ge 2 ]] \
    || fail "rampart did not log two valid dns-01 challenges for $ZONE"
[[ "$(inventory "$DNS_SERIAL" | cut -d' ' -f1)" == valid ]] || fail "the dns-01 certificate's inventory: $(inventory "$DNS_SERIAL")"
pass "manual flow (createOrder, getAuthorizations, verifyChallenge at knotd, completeChallenge, waitForValidStatus, finalizeOrder, getCertificate): $ZONE and *.$ZONE by dns-01 through $UPDATES RFC 2136 updates, TXT removed, openssl verifies"

# --- tls-alpn-01 through client.auto() and acme.crypto.createAlpnCertificate.
js_ok auto-tlsalpn01 "$WORK/alpn.pem" alpn.nodelab.test
split_chain "$WORK/alpn.pem"
ALPN="$(verify_issued "$WORK/alpn.pem.leaf" "$WORK/alpn.pem.chain" DNS:alpn.nodelab.test)"
openssl x509 -in "$WORK/alpn.pem.leaf" -noout -text | matches 'ASN1 OID: secp384r1' || fail "the tls-alpn-01 certificate's key is not P-384"
matches -x 'tls-alpn-01 alpn.nodelab.test answered' "$WORK/auto-tlsalpn01.out" || fail "rampart did not connect with SNI alpn.nodelab.test"
matches -E 'ACME challenge valid .*identifier=alpn.nodelab.test challenge="?tls-alpn-01' <<<"$(clean_err)" \
    || fail "rampart did not log a valid tls-alpn-01 challenge for alpn.nodelab.test"
[[ "$(inventory "$ALPN" | cut -d' ' -f1)" == valid ]] || fail "the tls-alpn-01 certificate's inventory: $(inventory "$ALPN")"
pass "client.auto() by tls-alpn-01: rampart accepted acme.crypto.createAlpnCertificate's certificate; a P-384 certificate for alpn.nodelab.test that openssl verifies"

# --- 5. A failing validation: the token served with another thumbprint.
js_ok wrong-http01 bad.nodelab.test
[[ "$(line wrong-http01 problem)" == "urn:ietf:params:acme:error:unauthorized" ]] \
    || fail "the failed challenge's problem: $(line wrong-http01 problem)"
[[ "$(line wrong-http01 authz-status)" == "invalid challenge invalid urn:ietf:params:acme:error:unauthorized" ]] \
    || fail "after the failed validation: $(line wrong-http01 authz-status)"
[[ "$(line wrong-http01 order-status)" == "invalid no-certificate" ]] || fail "the failed order: $(line wrong-http01 order-status)"
# acme-client's error is the detail of rampart's problem on the challenge, word for word.
DETAIL="$(line wrong-http01 auto-failed)"
[[ "$DETAIL" == "$(line wrong-http01 challenge-detail)" && "$DETAIL" == *"key authorization"* ]] \
    || fail "auto() rejected with $DETAIL; the challenge's error says $(line wrong-http01 challenge-detail)"
grep '^http-01 bad.nodelab.test ' "$WORK/wrong-http01.out" | matches -E ' 200$' || fail "rampart did not fetch the wrong token"
[[ "$(issued_for bad.nodelab.test)" == 0 ]] || fail "the inventory holds a certificate for bad.nodelab.test"
pass "a wrong key authorization: auto() rejects with rampart's problem detail (${DETAIL:0:60}…); challenge, authorization and order invalid (unauthorized), nothing issued"

# --- 6. Revocation by the account, then again.
js_ok revoke "$WORK/auto.pem" 4
[[ "$(line revoke revoked)" == 4 ]] || fail "revokeCertificate: $(tail -5 "$WORK/revoke.out")"
[[ "$(inventory "$AUTO" | cut -d' ' -f1-2)" == "revoked superseded" ]] || fail "after revokeCertificate the inventory says: $(inventory "$AUTO")"
[[ "$(line revoke again | cut -d' ' -f1-2)" == "400 urn:ietf:params:acme:error:alreadyRevoked" ]] \
    || fail "revoking again: $(line revoke again)"
[[ "$(inventory "$DNS_SERIAL" | cut -d' ' -f1)" == valid ]] || fail "revoking one certificate touched another"
pass "revokeCertificate(chain, {reason: 4}) is in the inventory as superseded; again: $(line revoke again | cut -d' ' -f1-2)"

# --- 7. External account binding.
EAB="$(curl -sf -H "Authorization: Bearer $ADMIN_KEY" -H 'Content-Type: application/json' \
    --data '{"identity": "team-node", "roles": ["acme-demo"]}' "$API/api/v1/acme/eab-keys")" \
    || fail "POST /api/v1/acme/eab-keys failed"
js_ok eab "$(jq -r .key_id <<<"$EAB")" "$(jq -r .hmac_key <<<"$EAB")" "$WORK/eab.pem" eab.nodelab.test
[[ "$(line eab without-eab | cut -d' ' -f2)" == "urn:ietf:params:acme:error:externalAccountRequired" ]] \
    || fail "registering without EAB: $(line eab without-eab)"
[[ "$(line eab wrong-hmac)" == "403 urn:ietf:params:acme:error:unauthorized" ]] || fail "a wrong EAB HMAC: $(line eab wrong-hmac)"
[[ "$(line eab eab-account)" == "https://localhost:$ACME_PORT/acme/eab/"*" ES384" ]] || fail "the EAB account: $(line eab eab-account)"
split_chain "$WORK/eab.pem"
EAB_SERIAL="$(verify_issued "$WORK/eab.pem.leaf" "$WORK/eab.pem.chain" DNS:eab.nodelab.test)"
[[ "$(inventory "$EAB_SERIAL")" == "valid - team-node" ]] || fail "the EAB certificate's inventory record: $(inventory "$EAB_SERIAL")"
pass "EAB profile: externalAccountRequired without externalAccountBinding, unauthorized with a wrong HMAC; {kid, hmacKey} registers an ES384 account whose certificate belongs to team-node"

# --- 8. ARI, by hand (acme-client has none).
js_ok ari "$WORK/dns.pem"
read -r _ START END _ <<<"$(line ari renewal-window)"
[[ -n "$START" && -n "$END" ]] || fail "no renewal window: $(tail -5 "$WORK/ari.out")"
pass "renewalInfo of the dns-01 certificate (fetched by hand: acme-client $ACME_CLIENT_VERSION has no ARI): window $START .. $END"

stop_rampart
stop_knotd || fail "knotd did not exit cleanly on SIGTERM: $(tail -5 "$KNOT/knot.log")"
