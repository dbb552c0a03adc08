#!/usr/bin/env bash
# Conformance: two more real ACME clients from Debian against rampart's ACME directory.
# Names live in a Knot DNS zone rampart resolves through, so http-01 is validated by name.
#   acme-tiny (the ~200-line Python client of many hand-rolled set-ups; RS256 account,
#     http-01 token files written into --acme-dir, here the acme-challenge directory of a
#     `python3 -m http.server` webroot): registration with a contact update, a certificate
#     for a name, acme-tiny's own pre-flight check of the token included; the chain it
#     prints verifies and the certificate names the CSR's SAN and key. Refusal: the same
#     account (newAccount answers "already registered") orders a name whose token is not
#     served (--acme-dir outside the webroot, --disable-check): acme-tiny fails with
#     rampart's problem (incorrectResponse, the 404) and nothing is issued for the name.
#   Ruby's acme-client gem (the client of GitLab's Let's Encrypt integration; ES256 account):
#     an order for two names, http-01 answered from WEBrick, finalized with a CSR made by the
#     gem (Acme::Client::CertificateRequest), both SANs in the certificate; revocation by
#     the account, found again by its key (onlyReturnExisting), reason superseded, visible
#     in rampart's inventory. Debian's gem is 2.0.9: its CSRs are PKCS#10 version 2, which
#     rampart refuses (badCSR) before the helper sends the same request as version 0, and
#     it drops leading zero bytes from EC JWK coordinates (so the helper takes a P-256 key
#     without them); versions before 2.0.16 also crash on a Replay-Nonce in the directory
#     response, which rampart (like Boulder) does not send: the script names that crash
#     should it come back.
# Both clients trust rampart's CA bundle (acme-tiny through SSL_CERT_FILE, which Python's ssl
# reads; the gem through Faraday's ssl ca_file) with verification on; each is first shown to
# refuse rampart's listener without the bundle.
# Not covered: dns-01 and tls-alpn-01 (acme-tiny has neither; the gem's dns-01 needs a DNS
# provider of your own, lego does it), EAB (neither client sends one), key rollover.
# Every certificate is checked with openssl verify against rampart's CA bundle.
source "$(dirname "$0")/lib.sh"

command -v acme-tiny >/dev/null 2>&1 || fail "acme-tiny not found: install the Debian package acme-tiny (.ci/run does)"
ruby -e 'require "acme-client"; require "webrick"' 2>/dev/null \
    || fail "ruby's acme-client or webrick not found: install the Debian packages ruby-acme-client and ruby-webrick (.ci/run does)"
RUBY_CLIENT="$ROOT/conformance/ruby/acme-client.rb"

start_knot tinylab.test "tiny A 127.0.0.1
unserved A 127.0.0.1
ruby A 127.0.0.1
www.ruby A 127.0.0.1"
HTTP01_PORT="$(free_port)"
acme_lab_config "http01_port = $HTTP01_PORT
dns_resolver = \"127.0.0.1:$DNS_PORT\""
start_rampart "$DIR/rampart.toml"
ADMIN_KEY="$(grep -o 'rpk_[A-Za-z0-9_-]*' "$WORK/rampart.out")"


# ---------------------------------------------------------------- acme-tiny
# The webroot acme-tiny writes tokens into, served where rampart validates http-01.
CHALLENGES="$WORK/www/.well-known/acme-challenge"
mkdir -p "$CHALLENGES"
python3 - "$WORK/www" "$HTTP01_PORT" >"$WORK/http.log" 2>&1 <<'PY' &
# python3 -m http.server, which also answers proxy-form request lines
# ("GET http://host/path"): acme-tiny's pre-flight check fetches its token by name, and
# Python's resolver does not know the lab zone, so http_proxy points the check here.
import functools, http.server, sys, urllib.parse
class Handler(http.server.SimpleHTTPRequestHandler):
    def translate_path(self, path):
        return super().translate_path(urllib.parse.urlsplit(path).path or "/")
http.server.test(HandlerClass=functools.partial(Handler, directory=sys.argv[1]),
                 port=int(sys.argv[2]), bind="127.0.0.1")
PY
HTTP_PID=$!
wait_http "http://127.0.0.1:$HTTP01_PORT/"

openssl genrsa -out "$WORK/tiny-account.key" 2048 2>/dev/null
# tiny <csr> <args…> — acme-tiny with the account key; the chain on $WORK/tiny.crt, its log on
# $WORK/tiny.out.
tiny() {
    local csr="$1"
    shift
    acme-tiny --account-key "$WORK/tiny-account.key" --csr "$csr" --directory-url "$DIRECTORY" \
        --contact mailto:tiny@example.org "$@" >"$WORK/tiny.crt" 2>"$WORK/tiny.out"
}

openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/tiny.key" \
    -subj "/CN=tiny.tinylab.test" -addext "subjectAltName=DNS:tiny.tinylab.test" -out "$WORK/tiny.csr" 2>/dev/null

# Verification is on: without the CA bundle acme-tiny cannot even read the directory.
if SSL_CERT_FILE=/dev/null tiny "$WORK/tiny.csr" --acme-dir "$CHALLENGES"; then
    fail "acme-tiny talked to rampart without trusting its CA bundle"
fi
matches -F 'CERTIFICATE_VERIFY_FAILED' "$WORK/tiny.out" || fail "acme-tiny without the CA bundle: $(tail -5 "$WORK/tiny.out")"
export SSL_CERT_FILE="$DIR/ca-bundle.pem"

http_proxy="http://127.0.0.1:$HTTP01_PORT" no_proxy="" tiny "$WORK/tiny.csr" --acme-dir "$CHALLENGES" \
    || fail "acme-tiny: $(tail -20 "$WORK/tiny.out")"
split_chain "$WORK/tiny.crt"
TINY="$(verify_issued "$WORK/tiny.crt.leaf" "$WORK/tiny.crt.chain" DNS:tiny.tinylab.test)"
cmp -s <(openssl x509 -in "$WORK/tiny.crt.leaf" -noout -pubkey) <(openssl pkey -in "$WORK/tiny.key" -pubout) \
    || fail "acme-tiny's certificate is not for the CSR's key"
matches -F 'Registered!' "$WORK/tiny.out" || fail "acme-tiny did not register: $(cat "$WORK/tiny.out")"
grep -A1 -F 'Updated contact details:' "$WORK/tiny.out" | matches -x 'mailto:tiny@example.org' \
    || fail "acme-tiny's contact update: $(cat "$WORK/tiny.out")"
matches -F 'tiny.tinylab.test verified!' "$WORK/tiny.out" || fail "acme-tiny did not verify the name: $(cat "$WORK/tiny.out")"
matches -F '"GET http://tiny.tinylab.test/.well-known/acme-challenge/' "$WORK/http.log" \
    || fail "acme-tiny's pre-flight check did not fetch its token: $(cat "$WORK/http.log")"
matches -F '"GET /.well-known/acme-challenge/' "$WORK/http.log" \
    || fail "rampart did not fetch the token from the webroot: $(cat "$WORK/http.log")"
[[ "$(inventory "$TINY" | cut -d' ' -f1)" == valid ]] || fail "the inventory says: $(inventory "$TINY")"
pass "acme-tiny (RS256 account, SSL_CERT_FILE trust, http-01 from a python3 http.server webroot) got a chain for tiny.tinylab.test that openssl verifies"

# Refusal: the token goes to a directory no web server serves (and acme-tiny's own check is
# off, so the CA is asked anyway): rampart finds no token, acme-tiny reports its problem.
mkdir -p "$WORK/unserved"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/unserved.key" \
    -subj "/CN=unserved.tinylab.test" -addext "subjectAltName=DNS:unserved.tinylab.test" -out "$WORK/unserved.csr" 2>/dev/null
if tiny "$WORK/unserved.csr" --acme-dir "$WORK/unserved" --disable-check; then
    fail "acme-tiny got a certificate for a name whose token is not served"
fi
matches -F 'Already registered!' "$WORK/tiny.out" || fail "newAccount did not find acme-tiny's account again: $(head -8 "$WORK/tiny.out")"
matches -F 'Challenge did not pass for unserved.tinylab.test' "$WORK/tiny.out" \
    || fail "acme-tiny's error for the unserved token: $(tail -5 "$WORK/tiny.out")"
PROBLEM="$(grep -o "urn:ietf:params:acme:error:[A-Za-z]*" "$WORK/tiny.out" | sort -u | paste -sd' ')"
# rampart calls a 404 for the token incorrectResponse (Boulder and pebble say unauthorized;
# RFC 8555 §8.3 names neither).
[[ "$PROBLEM" == "urn:ietf:params:acme:error:incorrectResponse" ]] \
    || fail "the unserved token's problem type is '$PROBLEM': $(tail -3 "$WORK/tiny.out")"
matches -E "answered HTTP 404 Not Found" "$WORK/tiny.out" || fail "rampart's problem does not say the token was not found: $(tail -1 "$WORK/tiny.out")"
[[ ! -s "$WORK/tiny.crt" ]] || fail "acme-tiny printed a certificate for the unserved name"
[[ "$(issued_for unserved.tinylab.test)" == 0 ]] || fail "the inventory holds a certificate for unserved.tinylab.test"
pass "acme-tiny for a name whose token is not served: refused ($PROBLEM), nothing issued"

kill -TERM "$HTTP_PID"
wait "$HTTP_PID" 2>/dev/null || true

# ---------------------------------------------------------------- Ruby acme-client
export ACME_DIRECTORY="$DIRECTORY" CA_BUNDLE="$DIR/ca-bundle.pem" HTTP01_PORT
unset SSL_CERT_FILE
# rb <args…> — the Ruby client; its output on $WORK/ruby.out.
rb() { ruby "$RUBY_CLIENT" "$@" >"$WORK/ruby.out" 2>&1; }

if rb untrusted; then fail "the acme-client gem read the directory without trusting the CA bundle"; fi
matches -F 'certificate verify failed' "$WORK/ruby.out" || fail "the gem without the CA bundle: $(tail -5 "$WORK/ruby.out")"

if ! rb issue "$WORK/ruby-account.key" "$WORK/ruby.crt" ruby.tinylab.test www.ruby.tinylab.test; then
    if matches -F "undefined method \`nonces' for nil" "$WORK/ruby.out"; then
        fail "acme-client $(ruby -e 'require "acme-client"; print Acme::Client::VERSION') crashes reading rampart's directory:" \
            "its GET response carries a Replay-Nonce, which the gem before 2.0.16 cannot store" \
            "(unixcharles/acme-client#232; Boulder, pebble and step-ca send none there): $(grep -m1 nonces "$WORK/ruby.out")"
    fi
    fail "acme-client issue: $(tail -20 "$WORK/ruby.out")"
fi
openssl ec -in "$WORK/ruby-account.key" -noout -text 2>/dev/null | matches prime256v1 || fail "the gem's account key is not P-256"
[[ "$(grep -c '^authorization .* valid' "$WORK/ruby.out")" == 2 ]] || fail "the gem did not complete two authorizations: $(cat "$WORK/ruby.out")"
# The gem's own CSR is PKCS#10 version 2: rampart refuses it (badCSR, saying so) and the
# order stays ready for the same request as version 0.
matches -x 'finalize refused: Acme::Client::Error::BadCSR: PKCS#10 version 2 is not defined.* (the gem.s CSR has version 2)' "$WORK/ruby.out" \
    || fail "rampart did not refuse the gem's version-2 CSR as badCSR: $(cat "$WORK/ruby.out")"
split_chain "$WORK/ruby.crt"
RUBY="$(verify_issued "$WORK/ruby.crt.leaf" "$WORK/ruby.crt.chain" DNS:ruby.tinylab.test DNS:www.ruby.tinylab.test)"
openssl x509 -in "$WORK/ruby.crt.leaf" -noout -text | matches 'Public-Key: (2048 bit)' \
    || fail "the certificate's key is not RSA-2048 (the gem's default)"
cmp -s <(openssl x509 -in "$WORK/ruby.crt.leaf" -noout -pubkey) <(openssl pkey -in "$WORK/ruby.crt.key" -pubout) \
    || fail "the gem's certificate is not for its CSR's key"
[[ "$(inventory "$RUBY" | cut -d' ' -f1)" == valid ]] || fail "the inventory says: $(inventory "$RUBY")"
pass "acme-client gem (ES256 account, http-01 from WEBrick) got ruby.tinylab.test and www.ruby.tinylab.test in one certificate that openssl verifies (its version-2 CSR refused as badCSR first)"

rb revoke "$WORK/ruby-account.key" "$WORK/ruby.crt.leaf" 4 || fail "acme-client revoke: $(tail -20 "$WORK/ruby.out")"
[[ "$(inventory "$RUBY" | cut -d' ' -f1-2)" == "revoked superseded" ]] \
    || fail "after the gem's revocation the inventory says: $(inventory "$RUBY")"
pass "acme-client gem revoke (reason 4, by the account found with onlyReturnExisting) is recorded as superseded"

stop_rampart
stop_knotd || fail "knotd did not exit cleanly on SIGTERM: $(tail -5 "$KNOT/knot.log")"
