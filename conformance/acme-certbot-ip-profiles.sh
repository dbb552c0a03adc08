#!/usr/bin/env bash
# Conformance: certbot (from PyPI) with an IP address identifier (RFC 8738) and an ACME
# profile (`--required-profile`, the newOrder `profile` field) against rampart.
#   - `--ip-address 127.0.0.1`: http-01 at the address itself, a certificate whose only SAN is
#     IP:127.0.0.1
#   - the directory lists the profile `client` in meta.profiles; `--required-profile client`
#     by an account bound (EAB) to an identity whose roles allow that template gets a
#     clientAuth certificate; the same request by an anonymous account is refused by policy
#     (rejectedIdentifier: its role may not use that template), and a profile the directory
#     does not list makes certbot fail.
# Every certificate is checked with openssl verify against rampart's CA bundle.
source "$(dirname "$0")/lib.sh"

certbot_venv
HTTP01_PORT="$(free_port)"
acme_lab_config "http01_port = $HTTP01_PORT
[acme.profiles.default]
template = \"server\"
certificate_profiles = [\"client\"]
anonymous_role = \"acme-demo\""
start_rampart "$DIR/rampart.toml"
KEY="$(grep -o 'rpk_[A-Za-z0-9_-]*' "$WORK/rampart.out")"
export REQUESTS_CA_BUNDLE="$DIR/ca-bundle.pem"
curl -sf --cacert "$DIR/ca-bundle.pem" "$DIRECTORY" | jq -e '.meta.profiles | has("client")' >/dev/null \
    || fail "the directory's meta.profiles does not list client: $(curl -s --cacert "$DIR/ca-bundle.pem" "$DIRECTORY")"

# certbot_at <dir> <args…> — certbot with its state in $WORK/<dir>, output in $WORK/<dir>.out
certbot_at() {
    local dir="$1"
    shift
    "$CERTBOT" certonly --server "$DIRECTORY" --config-dir "$WORK/$dir/config" --work-dir "$WORK/$dir/work" \
        --logs-dir "$WORK/$dir/logs" --non-interactive --agree-tos -m ops@example.org \
        --standalone --preferred-challenges http --http-01-port "$HTTP01_PORT" --http-01-address 127.0.0.1 \
        "$@" >"$WORK/$dir.out" 2>&1
}
verify() { # <dir> <cert-name>
    local live="$WORK/$1/config/live/$2"
    openssl verify -CAfile "$DIR/ca-bundle.pem" -untrusted "$live/chain.pem" "$live/cert.pem" >/dev/null \
        || fail "the certificate $2 does not verify"
}

# --- An IP address identifier (RFC 8738), validated by http-01 at the address.
certbot_at ip --ip-address 127.0.0.1 --cert-name ip || fail "certbot --ip-address: $(tail -20 "$WORK/ip.out")"
verify ip ip
SAN="$(openssl x509 -in "$WORK/ip/config/live/ip/cert.pem" -noout -ext subjectAltName | tail -n +2 | tr -d ' ')"
[[ "$SAN" == "IPAddress:127.0.0.1" ]] || fail "the IP certificate's SANs are: $SAN"
pass "certbot --ip-address 127.0.0.1 (http-01 at the address) got a certificate for IP:127.0.0.1"

# --- ACME profiles: an anonymous account may not use the client template…
if certbot_at anon --required-profile client -d anon.test --cert-name anon; then
    fail "an anonymous account got a certificate on the client profile"
fi
matches -F 'urn:ietf:params:acme:error:rejectedIdentifier' "$WORK/anon/logs/letsencrypt.log" \
    && matches -F 'may use template `client`' "$WORK/anon/logs/letsencrypt.log" \
    || fail "the anonymous client-profile order was not refused by policy: $(tail -5 "$WORK/anon.out")"
pass "certbot --required-profile client from an anonymous account is refused by policy"

# …an account bound to an identity whose roles allow it may.
EAB="$(curl -sf -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
    --data '{"identity": "team-clients", "roles": ["acme-demo", "scep-demo"]}' "$API/api/v1/acme/eab-keys")" \
    || fail "POST /api/v1/acme/eab-keys failed"
certbot_at eab --eab-kid "$(jq -r .key_id <<<"$EAB")" --eab-hmac-key "$(jq -r .hmac_key <<<"$EAB")" \
    --required-profile client -d localhost --cert-name gw1 \
    || fail "certbot --required-profile client (EAB): $(tail -20 "$WORK/eab.out")"
verify eab gw1
CERT="$WORK/eab/config/live/gw1/cert.pem"
openssl x509 -in "$CERT" -noout -ext extendedKeyUsage | matches 'TLS Web Client Authentication' \
    || fail "the client-profile certificate lacks clientAuth: $(openssl x509 -in "$CERT" -noout -ext extendedKeyUsage)"
SERIAL="$(openssl x509 -in "$CERT" -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f')"
RECORD="$(curl -sf -H "Authorization: Bearer $KEY" "$API/api/v1/certificates/$SERIAL" | jq -r '.template + " " + .owner')"
[[ "$RECORD" == "client team-clients" ]] || fail "the inventory says template/owner: $RECORD"
pass "certbot --required-profile client with EAB got a clientAuth certificate on the client template, owned by team-clients"

# A profile the directory does not list: certbot refuses before it orders.
if certbot_at eab --required-profile no-such-profile -d gw2.test --cert-name gw2; then
    fail "certbot got a certificate on a profile rampart does not offer"
fi
matches -i 'no-such-profile' "$WORK/eab.out" || fail "certbot's error does not name the profile: $(tail -5 "$WORK/eab.out")"
pass "certbot --required-profile with a profile rampart does not offer fails"
stop_rampart
