#!/usr/bin/env bash
# Conformance: rampart as a registration authority in front of an upstream ACME CA.
# Debian's pebble is the upstream CA; Knot DNS is the organisation's authoritative server,
# which pebble resolves through. certbot → rampart's ACME directory → rampart's policy →
# the `acme` CA adapter → pebble, the adapter proving the names with dns-01 records it
# publishes by TSIG-signed RFC 2136 updates at knotd and removes afterwards. Then an EST
# enrollment (curl + openssl) the same way, a name the DNS cannot prove (EST 502, nothing
# recorded), and revocation forwarded to pebble.
source "$(dirname "$0")/lib.sh"

certbot_venv

# --- The organisation's DNS: zone upstream.test at knotd, updates signed with a TSIG key.
start_knot upstream.test
(umask 077 && printf '%s\n' "$TSIG_SECRET" >"$WORK/tsig.secret")
pass "knotd is authoritative for $ZONE on 127.0.0.1:$DNS_PORT"

# --- The upstream CA: pebble on loopback, its HTTPS certificate from a CA made here,
# resolving dns-01 records at knotd.
start_pebble "$DNS_PORT" "$(free_port)"
"${PCURL[@]}" -f "https://localhost:$PEBBLE_MGMT_PORT/roots/0" >"$WORK/pebble-root.pem" || fail "pebble's root is not served"
pass "pebble answers at https://localhost:$PEBBLE_PORT/dir, resolving through knotd"

# --- rampart: its templates signed by pebble through the `acme` adapter.
HTTP01_PORT="$(free_port)"
acme_lab_config "http01_port = $HTTP01_PORT
dns_resolver = \"127.0.0.1:$DNS_PORT\""
EST_PORT="$(free_port)"
export RAMPART__EST__LISTEN="127.0.0.1:$EST_PORT"
HASH="$(printf 's3cret' | "$RAMPART" hash-password)" || fail "hash-password"
cat >>"$DIR/rampart.toml" <<TOML
[templates.server]
description = "TLS server certificate, signed by the upstream ACME CA"
extended_key_usages = ["serverAuth"]
key_types = ["rsa", "ecdsa-p256", "ecdsa-p384"]
min_rsa_bits = 2048
max_rsa_bits = 4096
default_validity_days = 90
max_validity_days = 90
max_sans = 10
ca = "pebble"
[templates.client]
description = "Device certificate, signed by the upstream ACME CA"
extended_key_usages = ["clientAuth"]
key_types = ["ecdsa-p256"]
min_rsa_bits = 2048
max_rsa_bits = 4096
default_validity_days = 30
max_validity_days = 90
max_sans = 1
ca = "pebble"
[roles.admin]
templates = ["server", "client"]
dns_names = ["**.test", "upstream.test"]
ip_ranges = []
manage = true
[acme.profiles.default]
template = "server"
anonymous_role = "admin"
[est.users.device-7]
password_hash = "$HASH"
roles = ["admin"]
[est.profiles.default]
template = "client"
auth = "any"
[ca_adapters.pebble]
type = "acme"
directory_url = "https://localhost:$PEBBLE_PORT/dir"
trust_root_file = "$PEBBLE_TLS_CA"
contact = ["mailto:pki@example.org"]
[ca_adapters.pebble.dns01]
method = "rfc2136"
server = "127.0.0.1:$DNS_PORT"
tsig_key_name = "$TSIG_NAME"
tsig_secret_file = "$WORK/tsig.secret"
TOML
grep -qF "$TSIG_SECRET" "$DIR/rampart.toml" && fail "the TSIG secret itself ended up in the config"
# finalize_wait_ms = 0: every finalize is answered "processing" at once while the upstream
# order runs, and certbot polls the order (RFC 8555 §7.4), as it must when an upstream CA
# takes longer than the default wait.
RAMPART__ACME__FINALIZE_WAIT_MS=0 RUST_LOG="info,rampart::ca=debug" start_rampart "$DIR/rampart.toml"
KEY="$(grep -o 'rpk_[A-Za-z0-9_-]*' "$WORK/rampart.out")"
export REQUESTS_CA_BUNDLE="$DIR/ca-bundle.pem"
CB=(--server "$DIRECTORY" --config-dir "$WORK/certbot/config" --work-dir "$WORK/certbot/work"
    --logs-dir "$WORK/certbot/logs" --non-interactive --agree-tos -m ops@example.org)

# --- certbot → rampart (http-01 downstream) → pebble (dns-01 upstream via knotd).
"$CERTBOT" certonly "${CB[@]}" --standalone --preferred-challenges http --http-01-port "$HTTP01_PORT" \
    --http-01-address 127.0.0.1 -d "$ZONE" --cert-name up >"$WORK/certbot.out" 2>&1 \
    || fail "certbot certonly: $(tail -20 "$WORK/certbot.out"; tail -5 "$WORK/pebble.log")"
LIVE="$WORK/certbot/config/live/up"
openssl verify -CAfile "$WORK/pebble-root.pem" -untrusted "$LIVE/chain.pem" "$LIVE/cert.pem" >/dev/null \
    || fail "certbot's certificate does not verify against pebble's root"
openssl x509 -in "$LIVE/cert.pem" -noout -issuer | matches "Pebble Intermediate CA" \
    || fail "the certificate was not issued by pebble: $(openssl x509 -in "$LIVE/cert.pem" -noout -issuer)"
openssl x509 -in "$LIVE/cert.pem" -noout -ext subjectAltName | matches -F "DNS:$ZONE" || fail "certificate lacks DNS:$ZONE"
SERIAL="$(openssl x509 -in "$LIVE/cert.pem" -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f' | sed 's/^\(00\)*//')"
RECORD="$(curl -sf -H "Authorization: Bearer $KEY" "$API/api/v1/certificates/$SERIAL")" \
    || fail "the inventory has no certificate $SERIAL"
[[ "$(jq -r '.issuer + " " + .status + " " + .template' <<<"$RECORD")" == "pebble valid server" ]] \
    || fail "inventory record: $(jq -c '{issuer, status, template}' <<<"$RECORD")"
grep -qE '"status": ?"processing"' "$WORK/certbot/logs/letsencrypt.log" \
    || fail "certbot's finalize was not answered \"processing\" (finalize_wait_ms = 0)"
pass "certbot got a certificate for $ZONE that pebble signed (verifies against pebble's root), polling the order answered \"processing\"; the inventory records issuer pebble"

UPDATES="$(grep -c "\[$ZONE.\] DDNS, finished" "$KNOT/knot.log" || true)"
((UPDATES >= 2)) || fail "knotd applied $UPDATES dynamic updates, not an add and a delete: $(tail -20 "$KNOT/knot.log")"
"${KDIG[@]}" "_acme-challenge.$ZONE" TXT | matches 'status: NXDOMAIN' \
    || fail "_acme-challenge.$ZONE still exists after the order: $("${KDIG[@]}" +short "_acme-challenge.$ZONE" TXT)"
grep -q "dns-01: TXT record added by RFC 2136 update" <(sed 's/\x1b\[[0-9;]*m//g' "$WORK/rampart.out" "$WORK/rampart.err") \
    || fail "rampart did not log its RFC 2136 update"
pass "rampart's TSIG-signed RFC 2136 updates reached knotd ($UPDATES applied) and the challenge record is gone afterwards"

# --- EST simpleenroll → pebble.
EST="https://localhost:$EST_PORT/.well-known/est"
# est_enroll <name> — a fresh P-256 key and CSR for DNS:<name> in $WORK/<name>.key/.csr.b64,
# simpleenroll with HTTP Basic; prints the status, the body goes to $WORK/<name>.resp.
est_enroll() {
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/$1.key" -subj "/CN=$1" \
        -addext "subjectAltName=DNS:$1" -outform DER 2>/dev/null | base64 >"$WORK/$1.csr.b64"
    curl -s --cacert "$DIR/ca-bundle.pem" -o "$WORK/$1.resp" -w '%{http_code}' -u device-7:s3cret \
        -H 'Content-Type: application/pkcs10' --data-binary @"$WORK/$1.csr.b64" "$EST/simpleenroll"
}
STATUS="$(est_enroll "$ZONE")"
[[ "$STATUS" == 200 ]] || fail "EST simpleenroll answered $STATUS: $(cat "$WORK/$ZONE.resp")"
base64 -d "$WORK/$ZONE.resp" | openssl pkcs7 -inform DER -print_certs -out "$WORK/dev-all.pem" || fail "EST answer is not PKCS#7"
openssl x509 -in "$WORK/dev-all.pem" -out "$WORK/dev.pem"
openssl verify -CAfile "$WORK/pebble-root.pem" -untrusted "$LIVE/chain.pem" "$WORK/dev.pem" >/dev/null \
    || fail "the EST certificate does not verify against pebble's root"
openssl x509 -in "$WORK/dev.pem" -noout -issuer | matches "Pebble Intermediate CA" || fail "the EST certificate is not pebble's"
[[ "$(openssl x509 -in "$WORK/dev.pem" -noout -pubkey)" == "$(openssl pkey -in "$WORK/$ZONE.key" -pubout)" ]] \
    || fail "the EST certificate is not for the device's key"
pass "EST simpleenroll (HTTP Basic) → rampart → pebble: a certificate for the device's key, verifying against pebble's root"

# --- A name rampart's policy allows but the DNS cannot prove: EST 502, nothing issued.
BEFORE="$(curl -sf -H "Authorization: Bearer $KEY" "$API/api/v1/certificates" | jq '.items | length')"
STATUS="$(est_enroll elsewhere.test)"
[[ "$STATUS" == 502 ]] || fail "an unprovable name answered $STATUS, not 502: $(cat "$WORK/elsewhere.test.resp")"
grep -q "upstream CA" "$WORK/elsewhere.test.resp" || fail "the 502 does not say the upstream CA failed: $(cat "$WORK/elsewhere.test.resp")"
AFTER="$(curl -sf -H "Authorization: Bearer $KEY" "$API/api/v1/certificates" | jq '.items | length')"
[[ "$BEFORE" == "$AFTER" ]] || fail "a certificate was recorded for the failed enrollment ($BEFORE → $AFTER)"
curl -sf -H "Authorization: Bearer $KEY" "$API/api/v1/audit?action=issuance_failed" \
    | jq -e '[.items[] | select(.entry.reason | test("upstream CA"))] | length > 0' >/dev/null \
    || fail "the failed upstream issuance is not audited"
pass "a name outside every zone knotd serves: EST 502 \"$(head -c 100 "$WORK/elsewhere.test.resp" | tr -d '\n')…\", audited, nothing recorded"

# --- Revocation reaches pebble.
pebble_status() { "${PCURL[@]}" -f "https://localhost:$PEBBLE_MGMT_PORT/cert-status-by-serial/$1" | jq -r '.Status'; }
[[ "$(pebble_status "$SERIAL")" == Valid ]] || fail "pebble does not list $SERIAL as valid: $(pebble_status "$SERIAL")"
"$CERTBOT" revoke "${CB[@]}" --cert-path "$LIVE/cert.pem" --reason keycompromise --no-delete-after-revoke \
    >"$WORK/revoke.out" 2>&1 || fail "certbot revoke: $(tail -20 "$WORK/revoke.out")"
[[ "$(pebble_status "$SERIAL")" == Revoked ]] || fail "pebble says $SERIAL is $(pebble_status "$SERIAL") after revocation"
STATUS="$(curl -sf -H "Authorization: Bearer $KEY" "$API/api/v1/certificates/$SERIAL" | jq -r '.status + " " + (.revocation.reason // "")')"
[[ "$STATUS" == "revoked keyCompromise" ]] || fail "after certbot revoke the inventory says: $STATUS"
pass "certbot revoke → rampart → pebble: pebble lists $SERIAL as Revoked, and so does the inventory"

# The EST certificate, revoked by an operator through the API.
DEV_SERIAL="$(openssl x509 -in "$WORK/dev.pem" -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f' | sed 's/^\(00\)*//')"
STATUS="$(curl -s -o "$WORK/revoke-api.json" -w '%{http_code}' -X POST -H "Authorization: Bearer $KEY" \
    -H 'Content-Type: application/json' -d '{"reason": "cessationOfOperation"}' \
    "$API/api/v1/certificates/$DEV_SERIAL/revoke")"
[[ "$STATUS" == 200 ]] || fail "revoking the EST certificate over the API answered $STATUS: $(cat "$WORK/revoke-api.json")"
[[ "$(pebble_status "$DEV_SERIAL")" == Revoked ]] || fail "pebble says $DEV_SERIAL is $(pebble_status "$DEV_SERIAL")"
pass "API revocation of the EST certificate reached pebble"

stop_rampart
kill -TERM "$PEBBLE_PID" 2>/dev/null || true
wait "$PEBBLE_PID" 2>/dev/null || true
stop_knotd || fail "knotd did not exit cleanly on SIGTERM: $(tail -5 "$KNOT/knot.log")"
