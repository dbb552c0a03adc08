#!/usr/bin/env bash
# Conformance: certificate discovery as an operator runs it. A scheduled job (configured in
# rampart.toml) searches a directory; `rampart discover tls` handshakes with rampart's own
# EST listener and with an `openssl s_server` that picks its certificate by SNI;
# `rampart discover files` searches fixtures/discovery (PEM, DER, PKCS#12; the encrypted one
# is reported skipped); `rampart discover list` tells rampart's certificates from external
# ones. Refusals: a range over 4096 addresses, a key without a managing role.
# shellcheck source-path=SCRIPTDIR source=lib.sh disable=SC1091
source "$(dirname "$0")/lib.sh"
cd "$ROOT" || exit 1

DIR="$WORK/ra"
"$RAMPART" init --dir "$DIR" >"$WORK/init.out" 2>"$WORK/init.err" || fail "rampart init: $(cat "$WORK/init.err")"
KEY="$(grep -o 'rpk_[A-Za-z0-9_-]*' "$WORK/init.out")" || fail "init printed no API key"
grep -q '^jobs = \[\]' "$DIR/rampart.toml" || fail "the commented config has no [discovery] jobs = []"
sed -i "s|^jobs = \[\]|jobs = [{ name = \"nested\", kind = \"files\", path = \"$ROOT/fixtures/discovery/nested\", interval_minutes = 60 }]|" \
    "$DIR/rampart.toml"
PORT="$(free_port)"
EST_PORT="$(free_port)"
export RAMPART__API__LISTEN="127.0.0.1:$PORT" RAMPART__EST__LISTEN="127.0.0.1:$EST_PORT"
export RAMPART_CONFIG="$DIR/rampart.toml" RAMPART_API_KEY="$KEY"
API="http://127.0.0.1:$PORT"
start_rampart "$DIR/rampart.toml"

list_json() { "$RAMPART" discover list --json >"$WORK/list.json" || fail "discover list --json"; }
for _ in $(seq 1 50); do
    list_json
    [[ "$(jq '.items | length' "$WORK/list.json")" == 1 ]] && break
    sleep 0.1
done
jq -e --arg loc "$ROOT/fixtures/discovery/nested/cert.der" \
    '.items[0] | .subject == "CN=der.discovery.test" and .location == $loc and .source == "file" and (.issued_by_rampart | not)' \
    "$WORK/list.json" >/dev/null || fail "the scheduled job did not record nested/cert.der: $(cat "$WORK/list.json")"
pass "a scheduled [discovery] files job recorded what it found at start"

# A foreign TLS server: one certificate for SNI localhost, another without SNI.
for name in sni nosni; do
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/$name.key" \
        -subj "/CN=$name.external.test" -addext "subjectAltName=DNS:$name.external.test" -days 30 \
        -out "$WORK/$name.pem" 2>/dev/null
done
SSL_PORT="$(free_port)"
openssl s_server -accept "127.0.0.1:$SSL_PORT" -cert "$WORK/nosni.pem" -key "$WORK/nosni.key" \
    -servername localhost -cert2 "$WORK/sni.pem" -key2 "$WORK/sni.key" -www -quiet \
    >"$WORK/s_server.out" 2>&1 &
for _ in $(seq 1 50); do
    if (echo >"/dev/tcp/127.0.0.1/$SSL_PORT") 2>/dev/null; then break; fi
    sleep 0.1
done

"$RAMPART" discover tls --targets "127.0.0.1:$EST_PORT,localhost:$SSL_PORT,127.0.0.1:$SSL_PORT,127.0.0.2:$SSL_PORT" \
    --timeout 2s >"$WORK/tls.out" 2>"$WORK/tls.err" || fail "discover tls: $(cat "$WORK/tls.out" "$WORK/tls.err")"
grep -E "^[0-9a-f]{16} +rampart +.*127\.0\.0\.1:$EST_PORT " "$WORK/tls.out" >/dev/null \
    || fail "rampart's EST listener is not listed as rampart's: $(cat "$WORK/tls.out")"
grep -E "^[0-9a-f]{16} +external .*:$SSL_PORT \(sni localhost\) +CN=sni\.external\.test" "$WORK/tls.out" >/dev/null \
    || fail "the SNI certificate of s_server is not listed as external: $(cat "$WORK/tls.out")"
grep -E "^[0-9a-f]{16} +external .*127\.0\.0\.1:$SSL_PORT +CN=nosni\.external\.test" "$WORK/tls.out" >/dev/null \
    || fail "s_server's default certificate is not listed as external: $(cat "$WORK/tls.out")"
grep -q "^unreachable 127.0.0.2:$SSL_PORT: connect" "$WORK/tls.out" || fail "the closed target is not reported: $(cat "$WORK/tls.out")"
grep -q "^4 target(s): 3 answered, 3 certificate(s) recorded" "$WORK/tls.out" || fail "summary: $(cat "$WORK/tls.out")"
pass "discover tls: rampart's EST listener is rampart's, s_server's certificates (by SNI and without) are external"

"$RAMPART" discover files --path fixtures/discovery >"$WORK/files.out" 2>"$WORK/files.err" \
    || fail "discover files: $(cat "$WORK/files.out" "$WORK/files.err")"
grep -q "^skipped     fixtures/discovery/encrypted.p12: encrypted PKCS#12" "$WORK/files.out" \
    || fail "the encrypted PKCS#12 is not reported skipped: $(cat "$WORK/files.out")"
grep -q "^6 file(s) with certificates, 7 certificate(s) recorded, 1 skipped" "$WORK/files.out" \
    || fail "summary: $(cat "$WORK/files.out")"
grep -q "junk" "$WORK/files.out" && fail "junk files were reported: $(cat "$WORK/files.out")"
pass "discover files: PEM bundle, DER, PKCS#12 (clear, empty password, legacy, certificates only) found; encrypted PKCS#12 skipped; junk left out"

"$RAMPART" discover list >"$WORK/list.out" || fail "discover list"
grep -q "^10 certificate(s)" "$WORK/list.out" || fail "the inventory does not hold 10 discovered certificates: $(cat "$WORK/list.out")"
[[ "$(grep -cE '^[0-9a-f]{16} +rampart ' "$WORK/list.out")" == 1 ]] || fail "not exactly one rampart certificate: $(cat "$WORK/list.out")"
[[ "$(grep -cE '^[0-9a-f]{16} +external ' "$WORK/list.out")" == 9 ]] || fail "not 9 external certificates: $(cat "$WORK/list.out")"
"$RAMPART" discover list --external >"$WORK/external.out" || fail "discover list --external"
grep -q "^9 certificate(s)" "$WORK/external.out" || fail "--external: $(cat "$WORK/external.out")"
grep -qE ' rampart ' "$WORK/external.out" && fail "--external lists rampart's certificate: $(cat "$WORK/external.out")"
list_json
jq -e --arg loc "$ROOT/fixtures/discovery/nested/cert.der" \
    '[.items[] | select(.subject == "CN=der.discovery.test")][0].locations == [$loc, "fixtures/discovery/nested/cert.der"]' \
    "$WORK/list.json" >/dev/null || fail "one certificate seen twice is not one record with both places: $(cat "$WORK/list.json")"
SERIAL="$(jq -r '.items[] | select(.issued_by_rampart) | .serial' "$WORK/list.json")"
"$RAMPART" certs show "$SERIAL" >/dev/null || fail "the rampart certificate found on the listener is not in rampart's inventory"
curl -sf "$API/metrics" | matches 'rampart_discovered_certificates_total{source="file",external="true"} 7' \
    || fail "the discovery counter is missing from /metrics"
pass "discover list: 1 rampart, 9 external (--external shows only those); a certificate seen twice is one record"

"$RAMPART" discover tls --targets 10.0.0.0/8:443 >"$WORK/range.out" 2>&1 && fail "a /8 range was scanned"
grep -q "more than 4096 addresses" "$WORK/range.out" || fail "the range refusal does not say why: $(cat "$WORK/range.out")"
"$RAMPART" apikeys create --identity viewer --role scep-demo >"$WORK/viewer.out" || fail "creating a viewer key"
VIEWER="$(grep -o 'rpk_[A-Za-z0-9_-]*' "$WORK/viewer.out")"
RAMPART_API_KEY="$VIEWER" "$RAMPART" discover files --path fixtures/discovery >"$WORK/viewer.out" 2>&1 \
    && fail "a key without a managing role recorded discoveries"
grep -q "managing role" "$WORK/viewer.out" || fail "the refusal does not say why: $(cat "$WORK/viewer.out")"
pass "refused: a range over 4096 addresses (before any handshake), a key without a managing role"
stop_rampart
