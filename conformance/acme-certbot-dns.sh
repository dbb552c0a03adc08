#!/usr/bin/env bash
# Conformance: certbot's dns-rfc2136 plugin against rampart's ACME directory, through a real
# authoritative DNS server (Knot DNS, run as the current user on a loopback port).
# certbot adds the dns-01 TXT records by TSIG-signed RFC 2136 updates, rampart looks them
# up at that server, certbot removes them again; the certificate for dnslab.test and
# *.dnslab.test is checked with openssl verify against rampart's CA bundle.
source "$(dirname "$0")/lib.sh"

certbot_venv

# --- The authoritative DNS server: zone dnslab.test, dynamic updates signed with a TSIG key.
start_knot dnslab.test
[[ -z "$("${KDIG[@]}" +short "_acme-challenge.$ZONE" TXT)" ]] || fail "a TXT record exists before certbot ran"
pass "knotd is authoritative for $ZONE on 127.0.0.1:$DNS_PORT (SOA serial 1, no _acme-challenge TXT)"

# --- rampart, resolving dns-01 TXT records at that server.
acme_lab_config "dns_resolver = \"127.0.0.1:$DNS_PORT\""
RUST_LOG="info,rampart_acme::validation=debug" start_rampart "$DIR/rampart.toml"
grep -q "ACME .*https://127.0.0.1:$ACME_PORT/acme/default/directory" "$WORK/rampart.out" || fail "serve did not print the ACME directory"
export REQUESTS_CA_BUNDLE="$DIR/ca-bundle.pem"

# --- certbot certonly with the dns-rfc2136 authenticator, apex and wildcard.
CREDS="$WORK/rfc2136.ini"
(
    umask 077
    cat >"$CREDS" <<INI
dns_rfc2136_server = 127.0.0.1
dns_rfc2136_port = $DNS_PORT
dns_rfc2136_name = $TSIG_NAME
dns_rfc2136_secret = $TSIG_SECRET
dns_rfc2136_algorithm = HMAC-SHA256
INI
)
CB=(--server "$DIRECTORY" --config-dir "$WORK/certbot/config" --work-dir "$WORK/certbot/work"
    --logs-dir "$WORK/certbot/logs" --non-interactive --agree-tos -m ops@example.org)
"$CERTBOT" certonly "${CB[@]}" --authenticator dns-rfc2136 --dns-rfc2136-credentials "$CREDS" \
    --dns-rfc2136-propagation-seconds 1 -d "$ZONE" -d "*.$ZONE" --cert-name dnslab \
    >"$WORK/certbot.out" 2>&1 \
    || fail "certbot certonly: $(tail -20 "$WORK/certbot.out"; tail -20 "$KNOT/knot.log")"
LIVE="$WORK/certbot/config/live/dnslab"
openssl verify -CAfile "$DIR/ca-bundle.pem" -untrusted "$LIVE/chain.pem" "$LIVE/cert.pem" >/dev/null \
    || fail "the dns-01 certificate does not verify"
SAN="$(openssl x509 -in "$LIVE/cert.pem" -noout -ext subjectAltName | tail -n +2 | tr ',' '\n' | sed 's/^ *//')"
grep -qxF "DNS:$ZONE" <<<"$SAN" || fail "certificate lacks DNS:$ZONE: $SAN"
grep -qxF "DNS:*.$ZONE" <<<"$SAN" || fail "certificate lacks DNS:*.$ZONE: $SAN"
pass "certbot certonly --authenticator dns-rfc2136 got a certificate for $ZONE and *.$ZONE that openssl verifies"

# --- The TXT records went through knotd: certbot updated it, knotd applied it, rampart read it.
CBLOG="$WORK/certbot/logs/letsencrypt.log"
[[ "$(grep -c "Successfully added TXT record _acme-challenge.$ZONE" "$CBLOG")" == 2 ]] \
    || fail "certbot's log does not show two RFC 2136 TXT additions: $(grep -i rfc2136 "$CBLOG" | tail -10)"
[[ "$(grep -c "Successfully deleted TXT record _acme-challenge.$ZONE" "$CBLOG")" == 2 ]] \
    || fail "certbot's log does not show two RFC 2136 TXT deletions: $(grep -i rfc2136 "$CBLOG" | tail -10)"
UPDATES="$(grep -c "\[$ZONE.\] DDNS, finished" "$KNOT/knot.log" || true)"
((UPDATES >= 2)) || fail "knotd's log shows $UPDATES applied dynamic updates, not at least 2: $(tail -20 "$KNOT/knot.log")"
SERIAL="$(soa_serial)"
((SERIAL > 1)) || fail "the $ZONE SOA serial did not move after the updates: $SERIAL"
# rampart's only resolver is knotd; its debug log counts the TXT records each look-up got.
RLOG="$(cat "$WORK/rampart.out" "$WORK/rampart.err" | sed 's/\x1b\[[0-9;]*m//g')"
[[ "$(grep -c "dns-01: TXT records received name=_acme-challenge.$ZONE count=2" <<<"$RLOG")" == 2 ]] \
    || fail "rampart did not log receiving both TXT records from knotd twice: $(grep 'dns-01' <<<"$RLOG" | tail -10)"
pass "certbot's TSIG-signed RFC 2136 updates reached knotd ($UPDATES DDNS updates applied, SOA serial 1 -> $SERIAL) and rampart read both TXT records there"

TXT="$("${KDIG[@]}" +short "_acme-challenge.$ZONE" TXT)"
[[ -z "$TXT" ]] || fail "the challenge TXT records are still served after certbot finished: $TXT"
"${KDIG[@]}" "_acme-challenge.$ZONE" TXT | matches 'status: NXDOMAIN' \
    || fail "_acme-challenge.$ZONE does not answer NXDOMAIN after clean-up"
pass "certbot cleaned up: _acme-challenge.$ZONE has no TXT record at knotd afterwards"

stop_rampart
stop_knotd || fail "knotd did not exit cleanly on SIGTERM: $(tail -5 "$KNOT/knot.log")"
