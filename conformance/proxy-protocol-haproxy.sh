#!/usr/bin/env bash
# Conformance: rampart behind HAProxy (Debian package haproxy) forwarding at the TCP level,
# as EST needs (its TLS, client certificates and channel binding must reach rampart):
# `send-proxy-v2` in front of EST, `send-proxy` (version 1) in front of SCEP. Devices are
# curl and micromdm's scepclient, on distinct loopback addresses (127.0.0.5, …) so that the
# client rampart sees can be told from the proxy (127.0.0.1). Checks: enrollment and mTLS
# re-enrollment through the proxy; the audit and the per-client rate limit see each device,
# not the proxy; a trusted proxy's connection without a header is closed; a direct client
# (not a trusted proxy) sends none and is served.
# shellcheck source-path=SCRIPTDIR source=lib.sh disable=SC1091
source "$(dirname "$0")/lib.sh"

HAPROXY="$(command -v haproxy || echo /usr/sbin/haproxy)"
[[ -x "$HAPROXY" ]] || fail "haproxy missing (apt-get install haproxy)"
command -v scepclient >/dev/null || fail "scepclient missing (apt-get install scep)"

DIR="$WORK/ra"
API_PORT="$(free_port)"
EST_PORT="$(free_port)"
SCEP_PORT="$(free_port)"
PROXY_EST="$(free_port)"
PROXY_SCEP="$(free_port)"
mkdir -p "$DIR"
HASH="$(printf 's3cret' | "$RAMPART" hash-password)" || fail "hash-password"
cat >"$DIR/rampart.toml" <<TOML
[server]
data_dir = "$DIR"
trusted_proxies = ["127.0.0.1/32"]
proxy_protocol = ["est", "scep"]
[api]
listen = "127.0.0.1:$API_PORT"
[limits]
per_ip_requests_per_minute = 4
[est.users.device-7]
password_hash = "$HASH"
roles = ["admin"]
[scep.profiles.default]
template = "client"
identity = "scep-default"
roles = ["admin"]
challenge_hash = "$HASH"
legacy_algorithms = true
TOML
API="http://127.0.0.1:$API_PORT"
export RAMPART__EST__LISTEN="127.0.0.1:$EST_PORT" RAMPART__SCEP__LISTEN="127.0.0.1:$SCEP_PORT"
start_rampart "$DIR/rampart.toml"
KEY="$(grep -o 'rpk_[A-Za-z0-9_-]*' "$WORK/rampart.out")" || fail "serve printed no API key"

cat >"$WORK/haproxy.cfg" <<CFG
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend est
    bind 127.0.0.1:$PROXY_EST
    default_backend rampart_est
backend rampart_est
    server rampart 127.0.0.1:$EST_PORT send-proxy-v2
frontend scep
    bind 127.0.0.1:$PROXY_SCEP
    default_backend rampart_scep
backend rampart_scep
    server rampart 127.0.0.1:$SCEP_PORT send-proxy
CFG
"$HAPROXY" -c -q -f "$WORK/haproxy.cfg" || fail "haproxy refuses its configuration"
"$HAPROXY" -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
EST="https://localhost:$PROXY_EST/.well-known/est"
SCEP="http://127.0.0.1:$PROXY_SCEP/scep"
for _ in $(seq 1 100); do
    curl -s -o /dev/null "$SCEP?operation=GetCACaps" && break
    sleep 0.1
done
# curl from a device address: <source> <curl args…>; status in $WORK/status, body in $WORK/resp
from() {
    local source="$1"
    shift
    curl -s --interface "$source" --cacert "$DIR/ca-bundle.pem" -o "$WORK/resp" -w '%{http_code}' "$@" >"$WORK/status" \
        || echo "curl-$?" >"$WORK/status"
}
# audit_clients <action> — actor and client address of each audit entry of <action>, one a line
audit_clients() {
    curl -sf -H "Authorization: Bearer $KEY" "$API/api/v1/audit?action=$1&limit=100" \
        | jq -r '.items[].entry | "\(.actor) \(.details.client // "none")"'
}

# EST through send-proxy-v2: TLS end to end, the device's address in the header.
from 127.0.0.5 "$EST/cacerts"
[[ "$(cat "$WORK/status")" == 200 ]] || fail "cacerts through haproxy answered $(cat "$WORK/status")"
base64 -d "$WORK/resp" | openssl pkcs7 -inform DER -print_certs -out "$WORK/cacerts.pem" || fail "cacerts is not PKCS#7"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/dev.key" -subj "/CN=dev7.test" \
    -addext "subjectAltName=DNS:dev7.test" -outform DER 2>/dev/null | base64 >"$WORK/dev.csr.b64"
from 127.0.0.5 -u device-7:s3cret -H 'Content-Type: application/pkcs10' --data-binary @"$WORK/dev.csr.b64" "$EST/simpleenroll"
[[ "$(cat "$WORK/status")" == 200 ]] || fail "simpleenroll through haproxy answered $(cat "$WORK/status"): $(cat "$WORK/resp")"
base64 -d "$WORK/resp" | openssl pkcs7 -inform DER -print_certs -out "$WORK/dev.pem" || fail "simpleenroll answer is not PKCS#7"
openssl verify -CAfile "$WORK/cacerts.pem" "$WORK/dev.pem" >/dev/null || fail "the certificate does not verify"
from 127.0.0.5 --cert "$WORK/dev.pem" --key "$WORK/dev.key" -H 'Content-Type: application/pkcs10' \
    --data-binary @"$WORK/dev.csr.b64" "$EST/simplereenroll"
[[ "$(cat "$WORK/status")" == 200 ]] || fail "simplereenroll (client certificate through haproxy) answered $(cat "$WORK/status")"
pass "EST through HAProxy send-proxy-v2: simpleenroll with Basic, simplereenroll with the client certificate"
DECIDED="$(audit_clients decision | grep -v '^rampart ' | sort | uniq -c | tr -s ' ')"
[[ "$DECIDED" == " 2 device-7 127.0.0.5" ]] || fail "decisions: $DECIDED (want 2 × device-7 from 127.0.0.5)"
from 127.0.0.6 -u device-7:wrong -H 'Content-Type: application/pkcs10' --data-binary @"$WORK/dev.csr.b64" "$EST/simpleenroll"
[[ "$(cat "$WORK/status")" == 401 ]] || fail "a wrong password answered $(cat "$WORK/status")"
[[ "$(audit_clients credentials_refused)" == "device-7 127.0.0.6" ]] || fail "credentials_refused clients: $(audit_clients credentials_refused)"
pass "the audit records each device's address (127.0.0.5, 127.0.0.6), not HAProxy's"

# A trusted proxy that sends no header is refused; a direct client sends none and is served.
from 127.0.0.1 "https://localhost:$EST_PORT/.well-known/est/cacerts"
[[ "$(cat "$WORK/status")" == curl-* ]] || fail "a header-less connection from the trusted proxy was served: $(cat "$WORK/status")"
from 127.0.0.7 "https://localhost:$EST_PORT/.well-known/est/cacerts"
[[ "$(cat "$WORK/status")" == 200 ]] || fail "a direct client answered $(cat "$WORK/status")"
pass "a connection from the trusted proxy without a PROXY header is closed; a direct device is served"

# SCEP through send-proxy (version 1): micromdm's scepclient enrolls through the proxy.
curl -sf "$SCEP?operation=GetCACert" | openssl pkcs7 -inform DER -print_certs -out "$WORK/scepca.pem" \
    || fail "GetCACert through haproxy"
scep_ca_certs "$WORK/scepca.pem" "$WORK/scepca" >/dev/null
RA_FP="$(openssl x509 -in "$WORK/scepca.ra.pem" -noout -fingerprint -sha256 | cut -d= -f2 | tr -d :)"
mkdir -p "$WORK/scep"
timeout 60 scepclient -server-url "$SCEP" -ca-fingerprint "$RA_FP" -private-key "$WORK/scep/key.pem" \
    -certificate "$WORK/scep/cert.pem" -cn scep-device.test -challenge s3cret >"$WORK/scep/out" 2>&1 \
    || fail "scepclient through haproxy: $(head -5 "$WORK/scep/out")"
openssl verify -CAfile "$WORK/cacerts.pem" "$WORK/scep/cert.pem" >/dev/null || fail "the SCEP certificate does not verify"
pass "SCEP through HAProxy send-proxy (v1): scepclient enrolls"
# The per-client limit (4 a minute) counts each device behind the proxy apart.
for _ in 1 2 3 4; do
    from 127.0.0.8 -H 'Content-Type: application/x-pki-message' --data-binary 'x' "$SCEP?operation=PKIOperation"
    [[ "$(cat "$WORK/status")" != 429 ]] || fail "127.0.0.8 limited before its allowance was spent"
done
from 127.0.0.8 -H 'Content-Type: application/x-pki-message' --data-binary 'x' "$SCEP?operation=PKIOperation"
[[ "$(cat "$WORK/status")" == 429 ]] || fail "127.0.0.8's fifth request answered $(cat "$WORK/status")"
from 127.0.0.9 -H 'Content-Type: application/x-pki-message' --data-binary 'x' "$SCEP?operation=PKIOperation"
[[ "$(cat "$WORK/status")" != 429 ]] || fail "127.0.0.9 was limited for 127.0.0.8's requests"
pass "the per-client rate limit counts each device behind HAProxy apart (127.0.0.8 limited, 127.0.0.9 not)"
