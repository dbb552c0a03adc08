#!/usr/bin/env bash
# Conformance: certbot (from PyPI) against rampart's ACME directory.
# certonly --standalone with HTTP-01 on a high port, renew --force-renewal, revoke, and renew
# following rampart's renewalInfo (RFC 9773: recent certbot, 5.8 from PyPI here, asks it for every lineage); every
# certificate checked with openssl verify against rampart's CA bundle.
source "$(dirname "$0")/lib.sh"

certbot_venv
HTTP01_PORT="$(free_port)"
acme_lab_config "http01_port = $HTTP01_PORT"
start_rampart "$DIR/rampart.toml"
grep -q "ACME .*https://127.0.0.1:$ACME_PORT/acme/default/directory" "$WORK/rampart.out" || fail "serve did not print the ACME directory"
export REQUESTS_CA_BUNDLE="$DIR/ca-bundle.pem"
CB=(--server "$DIRECTORY" --config-dir "$WORK/certbot/config" --work-dir "$WORK/certbot/work"
    --logs-dir "$WORK/certbot/logs" --non-interactive --agree-tos -m ops@example.org)

"$CERTBOT" certonly "${CB[@]}" --standalone --preferred-challenges http --http-01-port "$HTTP01_PORT" \
    --http-01-address 127.0.0.1 -d localhost --cert-name lab >"$WORK/certbot.out" 2>&1 \
    || fail "certbot certonly: $(tail -20 "$WORK/certbot.out")"
LIVE="$WORK/certbot/config/live/lab"
openssl verify -CAfile "$DIR/ca-bundle.pem" -untrusted "$LIVE/chain.pem" "$LIVE/cert.pem" >/dev/null || fail "certonly certificate does not verify"
openssl x509 -in "$LIVE/cert.pem" -noout -text | matches "DNS:localhost" || fail "certificate lacks DNS:localhost"
FIRST="$(openssl x509 -in "$LIVE/cert.pem" -noout -serial)"
pass "certbot certonly --standalone (http-01) got a certificate that openssl verifies"

"$CERTBOT" renew "${CB[@]}" --force-renewal --no-random-sleep-on-renew --http-01-port "$HTTP01_PORT" --http-01-address 127.0.0.1 \
    >"$WORK/renew.out" 2>&1 || fail "certbot renew: $(tail -20 "$WORK/renew.out")"
SECOND="$(openssl x509 -in "$LIVE/cert.pem" -noout -serial)"
[[ "$FIRST" != "$SECOND" ]] || fail "renew did not replace the certificate"
openssl verify -CAfile "$DIR/ca-bundle.pem" -untrusted "$LIVE/chain.pem" "$LIVE/cert.pem" >/dev/null || fail "renewed certificate does not verify"
pass "certbot renew --force-renewal issued a new certificate"

SERIAL="$(openssl x509 -in "$LIVE/cert.pem" -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f')"
"$CERTBOT" revoke "${CB[@]}" --cert-path "$LIVE/cert.pem" --reason keycompromise --no-delete-after-revoke \
    >"$WORK/revoke.out" 2>&1 || fail "certbot revoke: $(tail -20 "$WORK/revoke.out")"
KEY="$(grep -o 'rpk_[A-Za-z0-9_-]*' "$WORK/rampart.out")"
STATUS="$(curl -sf -H "Authorization: Bearer $KEY" "$API/api/v1/certificates/$SERIAL" | jq -r '.status + " " + (.revocation.reason // "")')"
[[ "$STATUS" == "revoked keyCompromise" ]] || fail "after certbot revoke the inventory says: $STATUS"
pass "certbot revoke --reason keycompromise is recorded in the inventory"
# Revocation by the certificate's own key (RFC 8555 §7.6, JWS with the certificate key).
"$CERTBOT" certonly "${CB[@]}" --standalone --preferred-challenges http --http-01-port "$HTTP01_PORT" \
    --http-01-address 127.0.0.1 -d localhost --cert-name keyrevoke >"$WORK/certbot2.out" 2>&1 \
    || fail "certbot certonly (second): $(tail -20 "$WORK/certbot2.out")"
LIVE2="$WORK/certbot/config/live/keyrevoke"
SERIAL2="$(openssl x509 -in "$LIVE2/cert.pem" -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f')"
"$CERTBOT" revoke --server "$DIRECTORY" --config-dir "$WORK/certbot-nokey/config" --work-dir "$WORK/certbot-nokey/work" \
    --logs-dir "$WORK/certbot-nokey/logs" --non-interactive --cert-path "$LIVE2/cert.pem" --key-path "$LIVE2/privkey.pem" \
    --reason superseded --no-delete-after-revoke >"$WORK/revoke2.out" 2>&1 || fail "certbot revoke --key-path: $(cat "$WORK/revoke2.out")"
STATUS="$(curl -sf -H "Authorization: Bearer $KEY" "$API/api/v1/certificates/$SERIAL2" | jq -r '.status + " " + (.revocation.reason // "")')"
[[ "$STATUS" == "revoked superseded" ]] || fail "after revocation by certificate key the inventory says: $STATUS"
pass "certbot revoke --key-path (signed with the certificate key, no account) is recorded"

# ACME Renewal Information (RFC 9773): `certbot renew` asks renewalInfo for each lineage. Two
# fresh 90-day certificates are far from certbot's own 30-day threshold; rampart's window for
# one revoked through the API is now, so certbot renews that one and only that one.
CBA=(--server "$DIRECTORY" --config-dir "$WORK/certbot-ari/config" --work-dir "$WORK/certbot-ari/work"
    --logs-dir "$WORK/certbot-ari/logs" --non-interactive --agree-tos -m ops@example.org)
for lineage in ari-due ari-later; do
    "$CERTBOT" certonly "${CBA[@]}" --standalone --preferred-challenges http --http-01-port "$HTTP01_PORT" \
        --http-01-address 127.0.0.1 -d localhost --cert-name "$lineage" >"$WORK/certbot-ari.out" 2>&1 \
        || fail "certbot certonly ($lineage): $(tail -20 "$WORK/certbot-ari.out")"
done
ARI="$WORK/certbot-ari/config/live"
serial_of() { openssl x509 -in "$ARI/$1/cert.pem" -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f'; }
# No OCSP responder in these certificates: certbot's other reason to renew early is out.
[[ -z "$(openssl x509 -in "$ARI/ari-due/cert.pem" -noout -ocsp_uri)" ]] || fail "the lab certificate names an OCSP responder"
DUE="$(serial_of ari-due)"
LATER="$(serial_of ari-later)"
curl -sf -o /dev/null -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
    --data '{"reason": "superseded"}' "$API/api/v1/certificates/$DUE/revoke" || fail "revoking $DUE through the API failed"
"$CERTBOT" renew "${CBA[@]}" --no-random-sleep-on-renew --http-01-port "$HTTP01_PORT" --http-01-address 127.0.0.1 \
    >"$WORK/renew-ari.out" 2>&1 || fail "certbot renew (ARI): $(tail -20 "$WORK/renew-ari.out")"
[[ "$(serial_of ari-due)" != "$DUE" ]] || fail "certbot did not renew the certificate whose renewal window rampart opened"
[[ "$(serial_of ari-later)" == "$LATER" ]] || fail "certbot renewed a certificate rampart's renewal window does not cover yet"
openssl verify -CAfile "$DIR/ca-bundle.pem" -untrusted "$ARI/ari-due/chain.pem" "$ARI/ari-due/cert.pem" >/dev/null \
    || fail "the certificate certbot renewed on rampart's advice does not verify"
matches -F "/acme/default/renewal-info/" "$WORK/certbot-ari/logs/letsencrypt.log" \
    || fail "certbot's log shows no renewalInfo request: $(grep -i 'ari\|renewal' "$WORK/certbot-ari/logs/letsencrypt.log" | tail -5)"
pass "certbot renew follows rampart's renewalInfo (RFC 9773): the revoked certificate renewed, the other kept"
stop_rampart
