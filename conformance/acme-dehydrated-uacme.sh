#!/usr/bin/env bash
# Conformance: dehydrated (bash + curl + openssl) and uacme (C, libcurl + GnuTLS), Debian's
# packages, against rampart's ACME directory, with terms of service to agree to. Names live
# in a Knot DNS zone rampart resolves through; http-01 tokens are served from one webroot.
#   dehydrated: register (RS256: 0.7.0 only makes RSA account keys); http-01 with a P-384
#     key (its default), renew --force, revoke; an RSA-2048 certificate for two names (two
#     authorizations in one order) and a P-256 one; contact update; deactivation.
#   uacme: RS256 account, http-01 with an RSA-2048 key; "still current" decided by its
#     OCSP check against rampart's responder (AIA), renew -f, revoke by account (reason
#     keyCompromise), reissue after OCSP says revoked, revoke signed by the certificate key
#     (superseded); contact update; account key rollover (keyChange); deactivation.
#     ES256 account: tls-alpn-01 through ualpn (uacme's responder) for a name and for
#     127.0.0.1 (RFC 8738). ES384 account: a P-384 certificate.
# Not covered: dns-01 (neither client speaks RFC 2136 without an extra hook; lego does it),
# dehydrated's tls-alpn-01 (it only writes certificates for a responder you bring), revocation
# reasons in dehydrated (0.7.0 sends none). uacme 1.7.4 cannot be told which CA to trust
# (UACME_CAINFO came in 1.7.6), so it runs in a mount namespace whose /etc/ssl/certs holds
# only rampart's CA bundle.
# Every certificate is checked with openssl verify against rampart's CA bundle.
source "$(dirname "$0")/lib.sh"

for tool in dehydrated uacme ualpn unshare; do
    command -v "$tool" >/dev/null 2>&1 || fail "$tool not found: install the Debian packages dehydrated and uacme (.ci/run does)"
done

start_knot clientlab.test "dh A 127.0.0.1
dh-rsa A 127.0.0.1
www.dh-rsa A 127.0.0.1
dh-p256 A 127.0.0.1
ua A 127.0.0.1
alpn A 127.0.0.1
p384 A 127.0.0.1"
HTTP01_PORT="$(free_port)"
TLSALPN01_PORT="$(free_port)"
TOS="https://example.org/acme-terms"
acme_lab_config "http01_port = $HTTP01_PORT
tlsalpn01_port = $TLSALPN01_PORT
dns_resolver = \"127.0.0.1:$DNS_PORT\"
[acme.profiles.default]
template = \"server\"
anonymous_role = \"acme-demo\"
terms_of_service = \"$TOS\""
# A fixed publish port, so certificates carry the AIA OCSP URL uacme checks.
export RAMPART__PUBLISH__LISTEN="127.0.0.1:$(free_port)"
start_rampart "$DIR/rampart.toml"
ADMIN_KEY="$(grep -o 'rpk_[A-Za-z0-9_-]*' "$WORK/rampart.out")"
curl -sf --cacert "$DIR/ca-bundle.pem" "$DIRECTORY" | jq -r .meta.termsOfService | matches -xF "$TOS" \
    || fail "the directory does not announce the terms of service"

# The http-01 webroot both clients write tokens into.
export CHALLENGES="$WORK/www/.well-known/acme-challenge"
mkdir -p "$CHALLENGES"
python3 -m http.server --bind 127.0.0.1 --directory "$WORK/www" "$HTTP01_PORT" >"$WORK/http.log" 2>&1 &
wait_http "http://127.0.0.1:$HTTP01_PORT/"

key_of() { openssl x509 -in "$1" -noout -text | grep -E 'Public-Key:|ASN1 OID:' | tr -d ' ' | paste -sd' '; }

# ---------------------------------------------------------------- dehydrated
DH="$WORK/dehydrated"
mkdir -p "$DH"
# dehydrated sources this file; curl (its HTTP client) trusts rampart's CA through CURL_OPTS.
cat >"$DH/config" <<CONF
CA="$DIRECTORY"
CURL_OPTS="--cacert $DIR/ca-bundle.pem"
BASEDIR="$DH"
WELLKNOWN="$CHALLENGES"
CONTACT_EMAIL="\${DH_CONTACT:-ops@example.org}"
KEYSIZE=2048
CONF
dh() { dehydrated --config "$DH/config" "$@" >"$WORK/dh.out" 2>&1; }

dh --register --accept-terms || fail "dehydrated --register: $(tail -20 "$WORK/dh.out")"
REG="$(echo "$DH"/accounts/*/registration_info.json)"
jq -r '.status + " " + .contact[0]' "$REG" | matches -x 'valid mailto:ops@example.org' \
    || fail "dehydrated's registration: $(cat "$REG")"
openssl rsa -in "$(dirname "$REG")/account_key.pem" -noout -text 2>/dev/null | matches 'Private-Key: (2048 bit' \
    || fail "dehydrated's account key is not RSA-2048"
pass "dehydrated --register --accept-terms: an RS256 account with its contact"

dh --cron --domain dh.clientlab.test || fail "dehydrated --cron: $(tail -20 "$WORK/dh.out")"
LIVE="$DH/certs/dh.clientlab.test"
FIRST="$(verify_issued "$LIVE/cert.pem" "$LIVE/chain.pem" DNS:dh.clientlab.test)"
[[ "$(key_of "$LIVE/cert.pem")" == *secp384r1* ]] || fail "dehydrated's default key is not P-384: $(key_of "$LIVE/cert.pem")"
cat "$LIVE/cert.pem" "$LIVE/chain.pem" | cmp -s - "$LIVE/fullchain.pem" || fail "fullchain.pem is not cert + chain"
pass "dehydrated --cron (http-01) got a P-384 certificate for dh.clientlab.test that openssl verifies"

dh --cron --force --domain dh.clientlab.test || fail "dehydrated --cron --force: $(tail -20 "$WORK/dh.out")"
SECOND="$(verify_issued "$LIVE/cert.pem" "$LIVE/chain.pem" DNS:dh.clientlab.test)"
[[ "$FIRST" != "$SECOND" ]] || fail "dehydrated --force did not replace the certificate"
pass "dehydrated --cron --force renewed ($FIRST -> $SECOND)"

dh --revoke "$LIVE/cert.pem" || fail "dehydrated --revoke: $(tail -20 "$WORK/dh.out")"
[[ "$(inventory "$SECOND" | cut -d' ' -f1)" == revoked ]] || fail "after dehydrated --revoke the inventory says: $(inventory "$SECOND")"
[[ "$(inventory "$FIRST" | cut -d' ' -f1)" == valid ]] || fail "revoking the renewal touched the first certificate"
DH_OWNER="$(inventory "$FIRST" | cut -d' ' -f3)"
pass "dehydrated --revoke is recorded in the inventory ($(inventory "$SECOND" | cut -d' ' -f1-2))"

dh --cron --algo rsa --domain dh-rsa.clientlab.test --domain www.dh-rsa.clientlab.test \
    || fail "dehydrated --algo rsa: $(tail -20 "$WORK/dh.out")"
LIVE="$DH/certs/dh-rsa.clientlab.test"
S="$(verify_issued "$LIVE/cert.pem" "$LIVE/chain.pem" DNS:dh-rsa.clientlab.test DNS:www.dh-rsa.clientlab.test)"
[[ "$(key_of "$LIVE/cert.pem")" == *'(2048bit)'* ]] || fail "the --algo rsa key is not RSA-2048: $(key_of "$LIVE/cert.pem")"
[[ "$(inventory "$S" | cut -d' ' -f3)" == "$DH_OWNER" ]] || fail "the RSA certificate's owner is not the account's: $(inventory "$S")"
dh --cron --algo prime256v1 --domain dh-p256.clientlab.test || fail "dehydrated --algo prime256v1: $(tail -20 "$WORK/dh.out")"
LIVE="$DH/certs/dh-p256.clientlab.test"
verify_issued "$LIVE/cert.pem" "$LIVE/chain.pem" DNS:dh-p256.clientlab.test >/dev/null
[[ "$(key_of "$LIVE/cert.pem")" == *prime256v1* ]] || fail "the --algo prime256v1 key is not P-256: $(key_of "$LIVE/cert.pem")"
pass "dehydrated got an RSA-2048 certificate for two names and a P-256 one"

DH_CONTACT=new@example.org dh --account || fail "dehydrated --account: $(tail -20 "$WORK/dh.out")"
jq -r '.contact | join(" ")' "$REG" | matches -x 'mailto:new@example.org' || fail "after dehydrated --account: $(cat "$REG")"
pass "dehydrated --account updated the contact"

dh --deactivate || fail "dehydrated --deactivate: $(tail -20 "$WORK/dh.out")"
# dehydrated leaves this mark only when rampart answers status "deactivated", and refuses to
# go on while it is there: without it, rampart has to refuse the order itself.
rm "$(dirname "$REG")/deactivated" || fail "dehydrated did not mark its account deactivated: $(tail -5 "$WORK/dh.out")"
if dh --cron --force --domain dh.clientlab.test; then fail "a deactivated dehydrated account still ordered a certificate"; fi
matches -F 'urn:ietf:params:acme:error:unauthorized' "$WORK/dh.out" \
    || fail "the deactivated account's order was not refused as unauthorized: $(tail -5 "$WORK/dh.out")"
pass "dehydrated --deactivate: the account can no longer order"

# ---------------------------------------------------------------- uacme
# Only rampart's CA in the trust store uacme's libcurl/GnuTLS reads (a private mount namespace).
mkdir -p "$WORK/trust"
cp "$DIR/ca-bundle.pem" "$WORK/trust/ca-certificates.crt"
UNSHARE=(unshare --mount)
[[ "$(id -u)" == 0 ]] || UNSHARE+=(--map-root-user)
"${UNSHARE[@]}" true 2>/dev/null || fail "unshare --mount does not work here (uacme needs it to trust rampart's CA)"
export HOOK_LOG="$WORK/hook.log" UALPN_SOCK="$WORK/ualpn.sock"
cat >"$WORK/hook.sh" <<'HOOK'
#!/bin/sh
# uacme hook: <begin|done|failed> <type> <identifier> <token> <key authorization>; accepts
# only the challenge type in $UACME_CHALLENGE.
echo "$*" >>"$HOOK_LOG"
[ "$2" = "$UACME_CHALLENGE" ] || exit 1
case "$1 $2" in
"begin http-01") printf '%s' "$5" >"$CHALLENGES/$4" ;;
"begin tls-alpn-01") echo "auth $3 $5" | ualpn -s "$UALPN_SOCK" | grep -q '^OK' ;;
*" http-01") rm -f "$CHALLENGES/$4" ;;
*" tls-alpn-01") echo "unauth $3" | ualpn -s "$UALPN_SOCK" | grep -q '^OK' ;;
esac
HOOK
chmod +x "$WORK/hook.sh"
# ua <confdir> <args…> — uacme on $WORK/<confdir>; its output in $WORK/ua.out.
ua() {
    local confdir="$WORK/$1"
    shift
    UACME_CHALLENGE="${UACME_CHALLENGE:-http-01}" "${UNSHARE[@]}" \
        sh -c 'mount --bind "$0" /etc/ssl/certs && exec "$@"' "$WORK/trust" \
        uacme -v -a "$DIRECTORY" -c "$confdir" -h "$WORK/hook.sh" "$@" >"$WORK/ua.out" 2>&1
}
UA="$WORK/uacme"

ua uacme -y new ops@example.org || fail "uacme new: $(tail -20 "$WORK/ua.out")"
openssl rsa -in "$UA/private/key.pem" -noout -text 2>/dev/null | matches 'Private-Key: (2048 bit' \
    || fail "uacme's default account key is not RSA-2048"
pass "uacme -y new: an RS256 account, terms agreed"

ua uacme issue ua.clientlab.test || fail "uacme issue: $(tail -20 "$WORK/ua.out")"
CERT="$UA/ua.clientlab.test/cert.pem"
FIRST="$(verify_issued "$CERT" "$CERT" DNS:ua.clientlab.test)"
[[ "$(key_of "$CERT")" == *'(2048bit)'* ]] || fail "uacme's default certificate key is not RSA-2048: $(key_of "$CERT")"
matches -x "done http-01 ua.clientlab.test .*" "$HOOK_LOG" || fail "uacme's hook did not complete http-01: $(cat "$HOOK_LOG")"
[[ -n "$(openssl x509 -in "$CERT" -noout -ocsp_uri)" ]] || fail "the certificate carries no AIA OCSP URL"
pass "uacme issue (http-01 through the hook) got an RSA-2048 certificate that openssl verifies"

if ua uacme issue ua.clientlab.test; then fail "uacme reissued a current certificate"; fi
matches -F 'OCSP certificate status is GOOD' "$WORK/ua.out" || fail "uacme's OCSP check: $(tail -10 "$WORK/ua.out")"
pass "uacme issue skips the current certificate after rampart's OCSP responder says good"

ua uacme -f issue ua.clientlab.test || fail "uacme -f issue: $(tail -20 "$WORK/ua.out")"
SECOND="$(verify_issued "$CERT" "$CERT" DNS:ua.clientlab.test)"
[[ "$FIRST" != "$SECOND" ]] || fail "uacme -f did not replace the certificate"
pass "uacme -f issue renewed ($FIRST -> $SECOND)"

ua uacme -r 1 revoke "$CERT" || fail "uacme revoke: $(tail -20 "$WORK/ua.out")"
[[ "$(inventory "$SECOND" | cut -d' ' -f1-2)" == "revoked keyCompromise" ]] \
    || fail "after uacme -r 1 revoke the inventory says: $(inventory "$SECOND")"
[[ "$(inventory "$FIRST" | cut -d' ' -f1)" == valid ]] || fail "revoking the renewal touched the first certificate"
pass "uacme -r 1 revoke (account key) is recorded as keyCompromise"

# Put the revoked certificate back: uacme's OCSP check now says revoked and it reissues.
# (uacme keeps a replaced certificate as cert-<unix time>.pem and fails when that exists:
# these runs are fast enough to replace two in one second, so old copies go first.)
cp "$(ls "$UA"/ua.clientlab.test/revoked-*.pem | head -1)" "$CERT"
rm -f "$UA"/ua.clientlab.test/cert-*.pem
ua uacme issue ua.clientlab.test || fail "uacme issue over a revoked certificate: $(tail -20 "$WORK/ua.out")"
matches -F 'OCSP certificate status is REVOKED' "$WORK/ua.out" || fail "uacme's OCSP check: $(tail -10 "$WORK/ua.out")"
THIRD="$(verify_issued "$CERT" "$CERT" DNS:ua.clientlab.test)"
[[ "$THIRD" != "$SECOND" ]] || fail "uacme did not replace the revoked certificate"
pass "uacme issue reissues once rampart's OCSP responder says revoked"

ua uacme -r 4 revoke "$CERT" "$UA/private/ua.clientlab.test/key.pem" \
    || fail "uacme revoke with the certificate key: $(tail -20 "$WORK/ua.out")"
[[ "$(inventory "$THIRD" | cut -d' ' -f1-2)" == "revoked superseded" ]] \
    || fail "after uacme revoke with the certificate key the inventory says: $(inventory "$THIRD")"
pass "uacme -r 4 revoke signed with the certificate key is recorded as superseded"

ua uacme update new@example.org || fail "uacme update: $(tail -20 "$WORK/ua.out")"
UA_OWNER="$(inventory "$FIRST" | cut -d' ' -f3)"
cp -r "$UA" "$WORK/uacme-oldkey"
# newkey looks the account up first (-vv prints rampart's answer): the contact is the new one.
ua uacme -vv newkey || fail "uacme newkey: $(tail -20 "$WORK/ua.out")"
matches -F '"mailto:new@example.org"' "$WORK/ua.out" \
    || fail "the account rampart returns after uacme update: $(grep -F 'mailto:' "$WORK/ua.out" | head -3)"
pass "uacme update: rampart keeps the new contact"
cmp -s "$UA/private/key.pem" "$WORK/uacme-oldkey/private/key.pem" && fail "uacme newkey kept the old account key"
rm -f "$UA"/ua.clientlab.test/cert-*.pem
ua uacme -f issue ua.clientlab.test || fail "uacme -f issue with the new account key: $(tail -20 "$WORK/ua.out")"
S="$(verify_issued "$CERT" "$CERT" DNS:ua.clientlab.test)"
[[ "$(inventory "$S" | cut -d' ' -f3)" == "$UA_OWNER" ]] || fail "after the key change the owner is not the account's: $(inventory "$S")"
if ua uacme-oldkey -vv -f issue ua.clientlab.test; then fail "the replaced account key still works"; fi
matches -F 'accountDoesNotExist' "$WORK/ua.out" || fail "the old account key's error: $(tail -5 "$WORK/ua.out")"
pass "uacme newkey rolled the account key (keyChange): the new key orders for the same account, the old one is unknown"

ua uacme deactivate || fail "uacme deactivate: $(tail -20 "$WORK/ua.out")"
if ua uacme -f issue ua.clientlab.test; then fail "a deactivated uacme account still ordered a certificate"; fi
matches -F 'urn:ietf:params:acme:error:unauthorized' "$WORK/ua.out" || fail "the deactivated account's error: $(tail -5 "$WORK/ua.out")"
pass "uacme deactivate: the account can no longer order"

# --- ES256 account and tls-alpn-01 through ualpn (its backend is never reached).
ualpn -b "127.0.0.1@$TLSALPN01_PORT" -c "127.0.0.1@$(free_port)" -s "$UALPN_SOCK" -p "$WORK/ualpn.pid" \
    -n 1 -l "$WORK/ualpn.log" -v >/dev/null 2>&1 &
UALPN_PID=$!
for _ in $(seq 1 50); do [[ -S "$UALPN_SOCK" ]] && break; sleep 0.1; done
[[ -S "$UALPN_SOCK" ]] || fail "ualpn did not start: $(tail -5 "$WORK/ualpn.log")"
ua uacme-ec -t EC -y new || fail "uacme -t EC new: $(tail -20 "$WORK/ua.out")"
openssl ec -in "$WORK/uacme-ec/private/key.pem" -noout -text 2>/dev/null | matches prime256v1 || fail "uacme -t EC's account key is not P-256"
UACME_CHALLENGE=tls-alpn-01 ua uacme-ec -t EC issue alpn.clientlab.test 127.0.0.1 \
    || fail "uacme issue (tls-alpn-01): $(tail -20 "$WORK/ua.out"; tail -5 "$WORK/ualpn.log")"
CERT="$WORK/uacme-ec/alpn.clientlab.test/cert.pem"
verify_issued "$CERT" "$CERT" DNS:alpn.clientlab.test 'IP Address:127.0.0.1' >/dev/null
[[ "$(key_of "$CERT")" == *prime256v1* ]] || fail "uacme -t EC's certificate key is not P-256: $(key_of "$CERT")"
[[ "$(grep -c '^done tls-alpn-01' "$HOOK_LOG")" == 2 ]] || fail "uacme's hook did not complete two tls-alpn-01 challenges: $(cat "$HOOK_LOG")"
kill -TERM "$UALPN_PID"
wait "$UALPN_PID" || fail "ualpn did not exit cleanly on SIGTERM: $(tail -5 "$WORK/ualpn.log")"
pass "uacme -t EC (ES256 account): tls-alpn-01 through ualpn for alpn.clientlab.test and 127.0.0.1"

ua uacme-p384 -t EC -b 384 -y new || fail "uacme -t EC -b 384 new: $(tail -20 "$WORK/ua.out")"
openssl ec -in "$WORK/uacme-p384/private/key.pem" -noout -text 2>/dev/null | matches secp384r1 || fail "uacme -b 384's account key is not P-384"
ua uacme-p384 -t EC -b 384 issue p384.clientlab.test || fail "uacme issue (ES384 account): $(tail -20 "$WORK/ua.out")"
CERT="$WORK/uacme-p384/p384.clientlab.test/cert.pem"
verify_issued "$CERT" "$CERT" DNS:p384.clientlab.test >/dev/null
[[ "$(key_of "$CERT")" == *secp384r1* ]] || fail "uacme -b 384's certificate key is not P-384: $(key_of "$CERT")"
pass "uacme -t EC -b 384 (ES384 account) got a P-384 certificate"

stop_rampart
stop_knotd || fail "knotd did not exit cleanly on SIGTERM: $(tail -5 "$KNOT/knot.log")"
