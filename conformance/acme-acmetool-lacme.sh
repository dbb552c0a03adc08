#!/usr/bin/env bash
# Conformance: acmetool (hlandau's Go client, 0.2.2) and lacme (Debian's privilege-separated
# Perl client, 0.8.2, with lacme-accountd), Debian's packages, against rampart's ACME
# directory, with terms of service to agree to. Names live in a Knot DNS zone rampart
# resolves through.
#   acmetool: `reconcile` registers an RS256 account, the terms agreed through its response
#     file (in batch mode it stops, and nothing is issued, until that file answers for the
#     terms URL rampart's directory names); http-01 from a python3 http.server webroot
#     (webroot-paths) for one name, from its own listener on the http-01 port (http-ports)
#     for two names in one certificate; reconcile leaves a current certificate alone and
#     replaces it when the target changes (satisfy key type ecdsa: a P-256 certificate
#     replaces the RSA one, both in the inventory, owned by the account).
#   lacme: `account --register` without --tos-agreed is refused (403, rampart's detail shown),
#     with it an RS256 account (lacme-accountd) with its contact; newOrder for one name
#     (P-256 key) with http-01 from lacme's own webserver on the http-01 port, for two names
#     (RSA key) with tokens in a webroot (challenge-directory) served by python3 http.server;
#     newOrder skips the current certificate, --force renews it; revokeCert by the account
#     key, a second one refused (400, already revoked); revokeCert signed by the certificate key
#     through a standalone lacme-accountd on a socket (--socket); contact update;
#     deactivation (then newOrder is refused).
# Both trust rampart only through its CA bundle, verification on, and are first shown to
# fail without it: acmetool through SSL_CERT_FILE; lacme's ACME client through LWP's
# PERL_LWP_SSL_CA_FILE. lacme 0.8.2 has no CA setting for that connection ([client] takes
# only SSL_verify, SSL_version and SSL_cipher_list: "Unknown option(s) in [client]:
# SSL_ca_file") and wipes the environment before it starts the client, so [client] command
# is `/usr/bin/env PERL_LWP_SSL_CA_FILE=<bundle> /usr/libexec/lacme/client`; lacme itself
# checks what it gets against the bundle too (CAfile: openssl verify -purpose sslserver
# -x509_strict). lacme runs as the caller, configs in $WORK (never /etc), with empty
# user/group settings: no privilege drop, as its _lacme-client and _lacme-www users could
# not read $WORK. acmetool always tries to listen on :80, :402 and :4402 and always writes
# its token under /var/run/acme/acme-challenge too: it runs in user and mount namespaces
# with a tmpfs on /run, so it cannot take the privileged ports and leaves nothing outside
# $WORK (loopback port 4402 it can still take while it waits). Its http-01 self-test is off
# (http-self-test: false): it would fetch the token by name through the system resolver,
# which does not know the lab zone.
# Not covered: acmetool revocation: `acmetool revoke` only writes a "revoke" mark, and its
# ACMEv2 reconcile never acts on it (processPendingRevocations is commented out in
# storageops/reconcile.go and absent from the 0.2.2 binary), so nothing reaches rampart.
# acmetool forced renewal: it renews at min(30 days, a third of the validity) before
# notAfter and `margin` can only shorten that, so a fresh 90-day certificate cannot be
# renewed on demand (the target change above is its way to a new certificate). acmetool
# has no account key change, contact update or deactivation; its dns-01 needs hooks.
# lacme speaks http-01 only, makes RSA account keys only, has no account key change and
# sends no revocation reason (rampart records unspecified).
# Every certificate is checked with openssl verify against rampart's CA bundle.
source "$(dirname "$0")/lib.sh"

PATH="$PATH:/usr/sbin" # Debian puts lacme there
for tool in acmetool lacme lacme-accountd unshare; do
    command -v "$tool" >/dev/null 2>&1 \
        || fail "$tool not found: install the Debian packages acmetool, lacme and lacme-accountd (.ci/run does)"
done

start_knot toollab.test "at A 127.0.0.1
at2 A 127.0.0.1
www.at2 A 127.0.0.1
la A 127.0.0.1
la2 A 127.0.0.1
www.la2 A 127.0.0.1"
HTTP01_PORT="$(free_port)"
TOS="https://example.org/acme-terms"
acme_lab_config "http01_port = $HTTP01_PORT
dns_resolver = \"127.0.0.1:$DNS_PORT\"
[acme.profiles.default]
template = \"server\"
anonymous_role = \"acme-demo\"
terms_of_service = \"$TOS\""
start_rampart "$DIR/rampart.toml"
ADMIN_KEY="$(grep -o 'rpk_[A-Za-z0-9_-]*' "$WORK/rampart.out")"
curl -sf --cacert "$DIR/ca-bundle.pem" "$DIRECTORY" | jq -r .meta.termsOfService | matches -xF "$TOS" \
    || fail "the directory does not announce the terms of service"

# The http-01 webroot (python3 http.server on the http-01 port, while a client needs it).
CHALLENGES="$WORK/www/.well-known/acme-challenge"
mkdir -p "$CHALLENGES"
HTTP_PID=""
webroot_up() {
    python3 -m http.server --bind 127.0.0.1 --directory "$WORK/www" "$HTTP01_PORT" >>"$WORK/http.log" 2>&1 &
    HTTP_PID=$!
    wait_http "http://127.0.0.1:$HTTP01_PORT/"
}
webroot_down() {
    kill -TERM "$HTTP_PID"
    wait "$HTTP_PID" 2>/dev/null || true
    HTTP_PID=""
}
# revoked_by <serial> — who rampart's log says revoked <serial> ("reason by").
revoked_by() {
    sed 's/\x1b\[[0-9;]*m//g' "$WORK/rampart.err" | sed -n "s/.*certificate revoked serial=$1 reason=\"\([a-zA-Z]*\)\" by=\(.*\)$/\1 \2/p"
}
# token_fetches — how many token GETs the webroot has answered 200.
token_fetches() { grep -c '"GET /.well-known/acme-challenge/[A-Za-z0-9_-]* HTTP/1.1" 200' "$WORK/http.log" || true; }
key_of() { openssl x509 -in "$1" -noout -text | grep -E 'Public-Key:|ASN1 OID:' | tr -d ' ' | paste -sd' '; }
serial_of() { openssl x509 -in "$1" -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f'; }

# ---------------------------------------------------------------- acmetool
AT="$WORK/acmetool"
mkdir -p "$AT/conf" "$AT/desired" "$WORK/hooks"
cat >"$AT/conf/target" <<YAML
request:
  provider: $DIRECTORY
  challenge:
    webroot-paths:
      - $CHALLENGES
    http-self-test: false
YAML
# at <args…> — acmetool on $AT, trusting the CA bundle $AT_CA (rampart's unless set), in its
# own user and mount namespaces (a tmpfs on /run); its log on $WORK/at.out.
at() {
    SSL_CERT_FILE="${AT_CA:-$DIR/ca-bundle.pem}" unshare --user --map-root-user --mount \
        sh -c 'mount -t tmpfs tmpfs /run && exec "$@"' - \
        acmetool --state "$AT" --hooks "$WORK/hooks" --batch --xlog.severity=debug "$@" >"$WORK/at.out" 2>&1
}
unshare --user --map-root-user --mount sh -c 'mount -t tmpfs tmpfs /run' 2>/dev/null \
    || fail "unshare --user --mount does not work here (acmetool runs in such namespaces)"
printf 'satisfy:\n  names:\n    - at.toollab.test\n' >"$AT/desired/at"

printf '"acme-enter-email": "ops@example.org"\n' >"$AT/conf/responses"
# Verification is on: without the bundle acmetool cannot read the directory.
if AT_CA=/dev/null at reconcile; then fail "acmetool talked to rampart without trusting its CA bundle"; fi
matches -F 'x509: certificate signed by unknown authority' "$WORK/at.out" \
    || fail "acmetool without the CA bundle: $(tail -3 "$WORK/at.out")"
# No answer for rampart's terms: batch mode cannot agree, so no account and no certificate.
if at reconcile; then fail "acmetool registered without agreeing to the terms"; fi
matches -F 'cannot prompt the user' "$WORK/at.out" || fail "acmetool without an answer for the terms: $(tail -3 "$WORK/at.out")"
[[ "$(issued_for at.toollab.test)" == 0 ]] || fail "a certificate was issued without agreement to the terms"
printf '"acme-agreement:%s": true\n' "$TOS" >>"$AT/conf/responses"

webroot_up
at reconcile || fail "acmetool reconcile: $(grep -v 'enforce permissions' "$WORK/at.out" | tail -20)"
at account-url || fail "acmetool account-url: $(tail -3 "$WORK/at.out")"
ACCOUNT_URL="$(grep -x 'https://.*' "$WORK/at.out")" || fail "acmetool account-url printed no URL: $(tail -3 "$WORK/at.out")"
[[ "$ACCOUNT_URL" == "https://localhost:$ACME_PORT/acme/default/account/"* ]] || fail "acmetool's account URL: $ACCOUNT_URL"
AT_OWNER="acme:${ACCOUNT_URL##*/}"
openssl pkey -in "$(echo "$AT"/accounts/*/*/privkey)" -noout -text | matches 'Private-Key: (2048 bit' \
    || fail "acmetool's account key is not RSA-2048"
LIVE="$AT/live/at.toollab.test"
FIRST="$(verify_issued "$LIVE/cert" "$LIVE/chain" DNS:at.toollab.test)"
cat "$LIVE/cert" "$LIVE/chain" | cmp -s - "$LIVE/fullchain" || fail "acmetool's fullchain is not cert + chain"
[[ "$(key_of "$LIVE/cert")" == *'(2048bit)'* ]] || fail "acmetool's default key is not RSA-2048: $(key_of "$LIVE/cert")"
cmp -s <(openssl x509 -in "$LIVE/cert" -noout -pubkey) <(openssl pkey -in "$LIVE/privkey" -pubout) \
    || fail "acmetool's certificate is not for its key"
[[ "$(token_fetches)" == 1 ]] || fail "rampart did not fetch acmetool's token from the webroot: $(cat "$WORK/http.log")"
[[ "$(inventory "$FIRST")" == "valid - $AT_OWNER" ]] || fail "the inventory says: $(inventory "$FIRST") (account $ACCOUNT_URL)"
pass "acmetool reconcile: an RS256 account registered (terms agreed), http-01 from the webroot, an RSA-2048 certificate for at.toollab.test that openssl verifies, owned by the account"

webroot_down
printf 'satisfy:\n  names:\n    - at2.toollab.test\n    - www.at2.toollab.test\nrequest:\n  challenge:\n    http-ports:\n      - 127.0.0.1:%s\n' \
    "$HTTP01_PORT" >"$AT/desired/at2"
at reconcile || fail "acmetool reconcile (two names): $(grep -v 'enforce permissions' "$WORK/at.out" | tail -20)"
matches -F "listening on 127.0.0.1:$HTTP01_PORT" "$WORK/at.out" || fail "acmetool did not listen on the http-01 port: $(grep reshttp "$WORK/at.out")"
[[ "$(grep -c '("http-01"): request detected' "$WORK/at.out")" == 2 ]] \
    || fail "acmetool's listener did not see rampart fetch two tokens: $(grep -F 'http-01' "$WORK/at.out")"
LIVE="$AT/live/at2.toollab.test"
S="$(verify_issued "$LIVE/cert" "$LIVE/chain" DNS:at2.toollab.test DNS:www.at2.toollab.test)"
cmp -s "$LIVE/cert" "$AT/live/www.at2.toollab.test/cert" || fail "acmetool's live links for the two names differ"
[[ "$(inventory "$S")" == "valid - $AT_OWNER" ]] || fail "the inventory says: $(inventory "$S")"
[[ "$(serial_of "$AT/live/at.toollab.test/cert")" == "$FIRST" ]] || fail "reconcile replaced the current at.toollab.test certificate"
pass "acmetool reconcile: http-01 from its own listener (http-ports) for at2.toollab.test and www.at2.toollab.test in one certificate"

printf 'satisfy:\n  names:\n    - at.toollab.test\n  key:\n    type: ecdsa\nrequest:\n  challenge:\n    http-ports:\n      - 127.0.0.1:%s\n' \
    "$HTTP01_PORT" >"$AT/desired/at"
at reconcile || fail "acmetool reconcile (ecdsa): $(grep -v 'enforce permissions' "$WORK/at.out" | tail -20)"
LIVE="$AT/live/at.toollab.test"
SECOND="$(verify_issued "$LIVE/cert" "$LIVE/chain" DNS:at.toollab.test)"
[[ "$SECOND" != "$FIRST" ]] || fail "acmetool did not replace the RSA certificate"
[[ "$(key_of "$LIVE/cert")" == *prime256v1* ]] || fail "the reissued certificate's key is not P-256: $(key_of "$LIVE/cert")"
[[ "$(inventory "$FIRST" | cut -d' ' -f1)" == valid ]] || fail "the replaced certificate is $(inventory "$FIRST")"
[[ "$(issued_for at.toollab.test)" == 2 ]] || fail "the inventory holds $(issued_for at.toollab.test) certificates for at.toollab.test"
pass "acmetool reconcile for a changed target (key type ecdsa): a P-256 certificate replaces the RSA one ($FIRST -> $SECOND)"

# ---------------------------------------------------------------- lacme
LA="$WORK/lacme"
mkdir -p "$LA"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$LA/account.key" 2>/dev/null
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$LA/other.key" 2>/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$LA/la.key" 2>/dev/null
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$LA/la2.key" 2>/dev/null
printf 'privkey = file:%s\nquiet = No\n' "$LA/account.key" >"$LA/lacme-accountd.conf"
printf 'privkey = file:%s\n' "$LA/other.key" >"$LA/other-accountd.conf"
# lacme_conf <accountd config> [webserver lines] — a lacme.conf on stdout: no privilege drop,
# the client trusting rampart's CA bundle, lacme-accountd spawned with <accountd config>.
lacme_conf() {
    cat <<CONF
config-certs = lacme-certs.conf
[client]
user =
group =
command = /usr/bin/env PERL_LWP_SSL_CA_FILE=$DIR/ca-bundle.pem /usr/libexec/lacme/client
server = $DIRECTORY
[webserver]
user =
group =
${2:-listen = 127.0.0.1:$HTTP01_PORT}
[accountd]
config = $1
quiet = No
CONF
}
lacme_conf "$LA/lacme-accountd.conf" >"$LA/lacme.conf"
lacme_conf "$LA/other-accountd.conf" >"$LA/other.conf"
lacme_conf "$LA/lacme-accountd.conf" "challenge-directory = $CHALLENGES" >"$LA/webroot.conf"
lacme_conf "$LA/lacme-accountd.conf" | sed '/^command = /d' >"$LA/untrusted.conf"
cat >"$LA/lacme-certs.conf" <<CONF
CAfile = $DIR/ca-bundle.pem
[la]
certificate-key = $LA/la.key
certificate = $LA/la.crt
certificate-chain = $LA/la.fullchain.crt
subject = /CN=la.toollab.test
subjectAltName = DNS:la.toollab.test
[la2]
certificate-key = $LA/la2.key
certificate = $LA/la2.crt
certificate-chain = $LA/la2.fullchain.crt
subject = /CN=la2.toollab.test
subjectAltName = DNS:la2.toollab.test,DNS:www.la2.toollab.test
CONF
# la <config> <args…> — lacme with $LA/<config>.conf (its temporary files in $WORK/tmp); its
# output on $WORK/la.out, $WORK/la.err.
mkdir -p "$WORK/tmp"
la() {
    local conf="$LA/$1.conf"
    shift
    TMPDIR="$WORK/tmp" lacme --config="$conf" "$@" >"$WORK/la.out" 2>"$WORK/la.err"
}

if la untrusted account --register --tos-agreed mailto:ops@example.org; then
    fail "lacme talked to rampart without trusting its CA bundle"
fi
matches -F 'certificate verify failed' "$WORK/la.err" || fail "lacme without the CA bundle: $(tail -3 "$WORK/la.err")"

if la other account --register mailto:ops@example.org; then fail "lacme registered without --tos-agreed"; fi
matches -F '403 Forbidden (the terms of service must be agreed to)' "$WORK/la.err" \
    || fail "rampart's answer to a registration without agreement: $(tail -3 "$WORK/la.err")"
matches -F "Terms of Service: $TOS" "$WORK/la.err" || fail "lacme did not show rampart's terms: $(cat "$WORK/la.err")"
pass "lacme account --register without --tos-agreed: refused (403, the terms of service must be agreed to), after lacme showed rampart's terms"

la lacme account --register --tos-agreed mailto:ops@example.org || fail "lacme account --register: $(tail -20 "$WORK/la.err")"
jq -r '.status + " " + (.contact | join(","))' "$WORK/la.out" | matches -x 'valid mailto:ops@example.org' \
    || fail "lacme's registration: $(cat "$WORK/la.out")"
LA_OWNER="acme:$(sed -n 's|^Key ID: .*/account/||p' "$WORK/la.err")"
pass "lacme account --register --tos-agreed: an RS256 account (lacme-accountd) with its contact"

la lacme newOrder la || fail "lacme newOrder la: $(tail -20 "$WORK/la.err")"
split_chain "$LA/la.fullchain.crt"
cmp -s "$LA/la.crt" "$LA/la.fullchain.crt.leaf" || fail "lacme's certificate-chain does not start with its certificate"
FIRST="$(verify_issued "$LA/la.crt" "$LA/la.fullchain.crt.chain" DNS:la.toollab.test)"
[[ "$(key_of "$LA/la.crt")" == *prime256v1* ]] || fail "lacme's certificate is not for its P-256 key: $(key_of "$LA/la.crt")"
[[ "$(inventory "$FIRST")" == "valid - $LA_OWNER" ]] || fail "the inventory says: $(inventory "$FIRST") (owner $LA_OWNER)"
pass "lacme newOrder (http-01 from its own webserver on the http-01 port): a P-256 certificate for la.toollab.test that openssl verifies"

webroot_up
BEFORE="$(token_fetches)"
la webroot newOrder la2 || fail "lacme newOrder la2: $(tail -20 "$WORK/la.err")"
webroot_down
[[ "$(token_fetches)" == $((BEFORE + 2)) ]] || fail "rampart did not fetch lacme's two tokens from the webroot: $(cat "$WORK/http.log")"
[[ -z "$(ls -A "$CHALLENGES")" ]] || fail "lacme left files in the challenge directory: $(ls -A "$CHALLENGES")"
split_chain "$LA/la2.fullchain.crt"
S="$(verify_issued "$LA/la2.crt" "$LA/la2.fullchain.crt.chain" DNS:la2.toollab.test DNS:www.la2.toollab.test)"
[[ "$(key_of "$LA/la2.crt")" == *'(2048bit)'* ]] || fail "lacme's certificate is not for its RSA key: $(key_of "$LA/la2.crt")"
[[ "$(inventory "$S")" == "valid - $LA_OWNER" ]] || fail "the inventory says: $(inventory "$S")"
pass "lacme newOrder (tokens in a webroot served by python3 http.server): an RSA certificate for la2.toollab.test and www.la2.toollab.test"

la lacme newOrder la || fail "lacme newOrder over a current certificate: $(tail -20 "$WORK/la.err")"
matches -E '^\[la\] Valid until .*, skipping' "$WORK/la.err" || fail "lacme did not skip the current certificate: $(tail -5 "$WORK/la.err")"
[[ "$(serial_of "$LA/la.crt")" == "$FIRST" ]] || fail "lacme replaced a current certificate"
la lacme newOrder --force la || fail "lacme newOrder --force: $(tail -20 "$WORK/la.err")"
SECOND="$(serial_of "$LA/la.crt")"
split_chain "$LA/la.fullchain.crt"
verify_issued "$LA/la.crt" "$LA/la.fullchain.crt.chain" DNS:la.toollab.test >/dev/null
[[ "$SECOND" != "$FIRST" ]] || fail "lacme newOrder --force did not replace the certificate"
[[ "$(inventory "$FIRST" | cut -d' ' -f1)" == valid ]] || fail "the renewed certificate is $(inventory "$FIRST")"
pass "lacme newOrder skips the current certificate; --force renews it ($FIRST -> $SECOND)"

la lacme revokeCert "$LA/la.crt" || fail "lacme revokeCert: $(tail -20 "$WORK/la.err")"
[[ "$(inventory "$SECOND")" == "revoked unspecified $LA_OWNER" ]] || fail "after lacme revokeCert the inventory says: $(inventory "$SECOND")"
[[ "$(inventory "$FIRST" | cut -d' ' -f1)" == valid ]] || fail "revoking the renewal touched the first certificate"
[[ "$(revoked_by "$SECOND")" == "unspecified $LA_OWNER" ]] || fail "rampart's log of the revocation: $(revoked_by "$SECOND")"
if la lacme revokeCert "$LA/la.crt"; then fail "lacme revoked the same certificate twice"; fi
matches -F '400 Bad Request (the certificate is already revoked)' "$WORK/la.err" \
    || fail "rampart's answer to a second revocation: $(tail -3 "$WORK/la.err")"
pass "lacme revokeCert (account key) is recorded in the inventory; a second one is refused (already revoked)"

# revokeCert signed by the certificate key: a standalone lacme-accountd holding la2's RSA
# key on a socket; lacme finds no account for it and sends the key itself (jwk).
mkdir -m 0700 "$WORK/accountd"
lacme-accountd --privkey="file:$LA/la2.key" --socket="$WORK/accountd/S.lacme" --quiet >"$WORK/accountd.log" 2>&1 &
ACCOUNTD_PID=$!
for _ in $(seq 1 50); do [[ -S "$WORK/accountd/S.lacme" ]] && break; sleep 0.1; done
[[ -S "$WORK/accountd/S.lacme" ]] || fail "lacme-accountd did not bind its socket: $(cat "$WORK/accountd.log")"
la lacme --socket="$WORK/accountd/S.lacme" revokeCert "$LA/la2.crt" \
    || fail "lacme revokeCert with the certificate key: $(tail -20 "$WORK/la.err")"
kill -TERM "$ACCOUNTD_PID"
wait "$ACCOUNTD_PID" 2>/dev/null || true
[[ "$(inventory "$S")" == "revoked unspecified $LA_OWNER" ]] || fail "after revokeCert with the certificate key the inventory says: $(inventory "$S")"
[[ "$(revoked_by "$S")" == "unspecified acme:certificate-key" ]] || fail "rampart's log of the revocation: $(revoked_by "$S")"
pass "lacme revokeCert signed by the certificate key (standalone lacme-accountd on --socket) is recorded in the inventory"

la lacme account mailto:new@example.org || fail "lacme account (contact update): $(tail -20 "$WORK/la.err")"
jq -r '.status + " " + (.contact | join(","))' "$WORK/la.out" | matches -x 'valid mailto:new@example.org' \
    || fail "lacme's contact update: $(cat "$WORK/la.out")"
pass "lacme account: the contact is updated"

la lacme account --deactivate || fail "lacme account --deactivate: $(tail -20 "$WORK/la.err")"
jq -r .status "$WORK/la.out" | matches -x deactivated || fail "lacme's deactivation: $(cat "$WORK/la.out")"
if la lacme newOrder --force la; then fail "a deactivated lacme account still ordered a certificate"; fi
matches -F 'an account with this key exists but is deactivated' "$WORK/la.err" \
    || fail "the deactivated account's order: $(tail -5 "$WORK/la.err")"
[[ "$(issued_for la.toollab.test)" == 2 ]] || fail "the inventory holds $(issued_for la.toollab.test) certificates for la.toollab.test"
pass "lacme account --deactivate: the account can no longer order"

stop_rampart
stop_knotd || fail "knotd did not exit cleanly on SIGTERM: $(tail -5 "$KNOT/knot.log")"
