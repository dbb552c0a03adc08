#!/usr/bin/env bash
# Conformance: SCEP (RFC 8894) with Red Hat's certmonger (Debian package certmonger), the
# client FreeIPA/RHEL hosts point at Windows NDES. certmonger runs as its own daemon on a
# private D-Bus, its state in $WORK: its SCEP helper reads GetCACaps and GetCACert →
# `getcert add-scep-ca` → `getcert request` with the profile's static challenge ends
# MONITORING with a certificate for the host that verifies against GetCACert's chain and is
# in rampart's inventory → a wrong challenge ends CA_REJECTED, nothing issued → renewal
# with the same key (`getcert resubmit`) and with a new key (`getcert rekey`) each bring a
# certificate with a new serial.
# shellcheck source-path=SCRIPTDIR source=lib.sh disable=SC1091
source "$(dirname "$0")/lib.sh"

for tool in certmonger getcert dbus-daemon; do
    command -v "$tool" >/dev/null 2>&1 || [[ -x "/usr/sbin/$tool" ]] \
        || fail "$tool missing (apt-get install certmonger dbus)"
done
CERTMONGER="$(command -v certmonger || echo /usr/sbin/certmonger)"
SCEP_SUBMIT=""
for helper in /usr/lib/certmonger/scep-submit /usr/libexec/certmonger/scep-submit; do
    if [[ -x "$helper" ]]; then SCEP_SUBMIT="$helper"; fi
done
[[ -n "$SCEP_SUBMIT" ]] || fail "certmonger's scep-submit helper not found"

CHALLENGE="$(openssl rand -hex 12)"
scep_lab "$CHALLENGE"
serial_of() { openssl x509 -in "$1" -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f'; }

# certmonger on a bus of its own: a session bus with no service directories (nothing is
# bus-activated, so no certmonger-session outside $WORK), state, lock and $HOME in $WORK.
CM="$WORK/certmonger"
mkdir -p "$CM/config" "$CM/requests" "$CM/cas" "$CM/local" "$CM/tmp" "$CM/home" "$CM/out"
cat >"$CM/bus.conf" <<XML
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path=$CM/bus</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
XML
DBUS_PID=""
CERTMONGER_PID=""
# Stop certmonger (it saves its state on the way out) and the bus before lib.sh's cleanup
# removes $WORK.
stop_certmonger() {
    local pid
    for pid in "$CERTMONGER_PID" "$DBUS_PID"; do
        if [[ -n "$pid" ]]; then
            kill -TERM "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    CERTMONGER_PID=""
    DBUS_PID=""
}
trap 'stop_certmonger; cleanup' EXIT

dbus-daemon --config-file="$CM/bus.conf" --nofork >"$CM/dbus.log" 2>&1 &
DBUS_PID=$!
for _ in $(seq 1 50); do
    [[ -S "$CM/bus" ]] && break
    kill -0 "$DBUS_PID" 2>/dev/null || fail "dbus-daemon exited: $(cat "$CM/dbus.log")"
    sleep 0.1
done
[[ -S "$CM/bus" ]] || fail "dbus-daemon did not listen on $CM/bus"
export DBUS_SESSION_BUS_ADDRESS="unix:path=$CM/bus"

HOME="$CM/home" CERTMONGER_CONFIG_DIR="$CM/config" CERTMONGER_REQUESTS_DIR="$CM/requests" \
    CERTMONGER_CAS_DIR="$CM/cas" CERTMONGER_LOCAL_CA_DIR="$CM/local" CERTMONGER_TMPDIR="$CM/tmp" \
    CERTMONGER_SYSTEM_LOCK_FILE="$CM/lock" \
    "$CERTMONGER" -s -n -d 2 >"$CM/certmonger.log" 2>&1 &
CERTMONGER_PID=$!
for _ in $(seq 1 100); do
    getcert list-cas -s >/dev/null 2>&1 && break
    kill -0 "$CERTMONGER_PID" 2>/dev/null || fail "certmonger exited: $(tail -20 "$CM/certmonger.log")"
    sleep 0.1
done
getcert list-cas -s >/dev/null 2>&1 || fail "certmonger is not on the bus: $(tail -20 "$CM/certmonger.log")"

# cm_status <id> — the tracking request's state (MONITORING, CA_REJECTED, …)
cm_status() { getcert list -s -i "$1" 2>/dev/null | sed -n 's/^[[:space:]]*status: //p'; }
# cm_report <id> — what certmonger says about a request, and its log, for a failure message
cm_report() {
    printf '\n--- getcert list -i %s:\n%s\n--- certmonger log (tail):\n%s\n--- rampart audit (tail):\n%s\n' "$1" \
        "$(getcert list -s -i "$1" 2>&1)" "$(grep -v 'Running enrollment/cadata helper' "$CM/certmonger.log" | tail -15)" \
        "$(curl -s "${AUTH[@]}" "$API/api/v1/audit?limit=1000" \
            | jq -c '.items[-8:][] | .entry | {time, action, outcome, reason, subject, request_id}' 2>&1)"
}
# await <id> <state> [<serial it must differ from>] — waits (60 s at most) until the request
# is in <state> (with a certificate whose serial is not the one given); returns non-zero at
# once when it lands in another final state. certmonger retries an unreachable CA only after
# minutes, so CA_UNREACHABLE counts as final here.
await() {
    local id="$1" want="$2" old="${3:-}" state
    for _ in $(seq 1 240); do
        state="$(cm_status "$id")"
        if [[ "$state" == "$want" ]]; then
            [[ -z "$old" ]] && return 0
            [[ -s "$CM/out/$id.pem" && "$(serial_of "$CM/out/$id.pem")" != "$old" ]] && return 0
        fi
        case "$state" in
            CA_REJECTED | CA_UNREACHABLE | CA_UNCONFIGURED | NEED_GUIDANCE | NEED_CA)
                [[ "$state" == "$want" ]] || return 1
                ;;
        esac
        sleep 0.25
    done
    return 1
}

# certmonger's SCEP helper on its own: GetCACaps and GetCACert.
"$SCEP_SUBMIT" -u "$SCEP" -c >"$CM/caps" 2>"$CM/caps.err" || fail "scep-submit -c (GetCACaps): $(cat "$CM/caps.err")"
for cap in POSTPKIOperation SHA-256 AES Renewal; do
    tr -d '\r' <"$CM/caps" | matches -ixF "$cap" || fail "scep-submit -c: GetCACaps lacks $cap: $(tr '\n' ' ' <"$CM/caps")"
done
"$SCEP_SUBMIT" -u "$SCEP" -C >"$CM/cacerts.pem" 2>"$CM/cacerts.err" || fail "scep-submit -C (GetCACert): $(cat "$CM/cacerts.err")"
[[ "$(scep_ca_certs "$CM/cacerts.pem" "$CM/ca")" == 3 ]] \
    || fail "scep-submit -C did not print RA + issuing CA + root: $(grep -c 'BEGIN CERTIFICATE' "$CM/cacerts.pem") certificates"
split_pems "$DIR/ca-bundle.pem" "$CM/bundle"
for pem in "$CM"/bundle.[0-9]*.pem; do openssl x509 -in "$pem" -noout -fingerprint -sha256; done \
    | matches -xF "$(openssl x509 -in "$CM/ca.root.pem" -noout -fingerprint -sha256)" \
    || fail "the root GetCACert gave scep-submit is not in rampart's CA bundle"
openssl verify -CAfile "$CM/ca.root.pem" -untrusted "$CM/ca.issuing.pem" "$CM/ca.ra.pem" >/dev/null \
    || fail "the RA certificate scep-submit read does not verify against the chain"
pass "certmonger's scep-submit reads GetCACaps (POSTPKIOperation, SHA-256, AES, Renewal) and GetCACert (RSA RA certificate, issuing CA, root)"

# The CA in certmonger: it fetches the CA certificates itself.
getcert add-scep-ca -s -c rampart -u "$SCEP" >"$CM/add-ca.out" 2>&1 || fail "getcert add-scep-ca: $(cat "$CM/add-ca.out")"
for _ in $(seq 1 120); do
    getcert list-cas -s -c rampart 2>/dev/null | matches -F 'SCEP CA certificate thumbprint (SHA1)' && break
    sleep 0.25
done
CA_THUMB="$(getcert list-cas -s -c rampart | sed -n 's/.*SCEP CA certificate thumbprint (SHA1): //p' | tr -d ' ')"
[[ -n "$CA_THUMB" ]] || fail "certmonger did not fetch rampart's CA certificates: $(getcert list-cas -s -c rampart -v 2>&1)"
KNOWN="$(for pem in "$CM/ca.ra.pem" "$CM/ca.issuing.pem" "$CM/ca.root.pem"; do
    openssl x509 -in "$pem" -noout -fingerprint -sha1 | cut -d= -f2 | tr -d :
done)"
grep -qix "$CA_THUMB" <<<"$KNOWN" || fail "certmonger's SCEP CA certificate ($CA_THUMB) is none of GetCACert's"
pass "getcert add-scep-ca: certmonger fetched rampart's CA certificates (SCEP CA certificate SHA-1 $CA_THUMB)"

# Enrollment with the profile's static challenge.
BEFORE="$(count_certs)"
getcert request -s -c rampart -I host -k "$CM/out/host.key" -f "$CM/out/host.pem" \
    -N CN=host.example.test -D host.example.test -L "$CHALLENGE" >"$CM/request.out" 2>&1 \
    || fail "getcert request: $(cat "$CM/request.out")"
await host MONITORING || fail "the enrollment with the static challenge ended $(cm_status host), not MONITORING$(cm_report host)"
CRT="$CM/out/host.pem"
[[ -s "$CRT" ]] || fail "MONITORING, but certmonger wrote no certificate to $CRT"
openssl verify -CAfile "$CM/ca.root.pem" -untrusted "$CM/ca.issuing.pem" "$CRT" >/dev/null \
    || fail "certmonger's certificate does not verify against GetCACert's chain: $(openssl verify -CAfile "$CM/ca.root.pem" -untrusted "$CM/ca.issuing.pem" "$CRT" 2>&1)"
openssl x509 -in "$CRT" -noout -subject -nameopt RFC2253 | matches 'CN=host.example.test' \
    || fail "the certificate is not for CN host.example.test: $(openssl x509 -in "$CRT" -noout -subject)"
openssl x509 -in "$CRT" -noout -ext subjectAltName | matches -F 'DNS:host.example.test' \
    || fail "the certificate does not name DNS:host.example.test: $(openssl x509 -in "$CRT" -noout -ext subjectAltName 2>&1)"
[[ "$(openssl x509 -in "$CRT" -noout -pubkey)" == "$(openssl pkey -in "$CM/out/host.key" -pubout)" ]] \
    || fail "the certificate is not for the key certmonger generated"
SERIAL1="$(serial_of "$CRT")"
curl -sf "${AUTH[@]}" "$API/api/v1/certificates/$SERIAL1" | jq -e '.owner == "scep-default" and .status == "valid"' >/dev/null \
    || fail "certificate $SERIAL1 is not in rampart's inventory as scep-default's: $(curl -s "${AUTH[@]}" "$API/api/v1/certificates/$SERIAL1")"
[[ "$(count_certs)" == $((BEFORE + 1)) ]] || fail "the enrollment issued $(($(count_certs) - BEFORE)) certificates, not one"
pass "getcert request with the static challenge: MONITORING, CN and DNS host.example.test, certmonger's key, verifies against GetCACert's chain, serial $SERIAL1 in the inventory"

# A wrong challenge: CA_REJECTED, nothing issued.
BEFORE="$(count_certs)"
WRONG_CHALLENGE="wrong-$(openssl rand -hex 6)"
getcert request -s -c rampart -I wrong -k "$CM/out/wrong.key" -f "$CM/out/wrong.pem" \
    -N CN=wrong.example.test -D wrong.example.test -L "$WRONG_CHALLENGE" >"$CM/wrong.out" 2>&1 \
    || fail "getcert request (wrong challenge): $(cat "$CM/wrong.out")"
await wrong CA_REJECTED || fail "the enrollment with a wrong challenge ended $(cm_status wrong), not CA_REJECTED$(cm_report wrong)"
[[ -s "$CM/out/wrong.pem" ]] && fail "certmonger wrote a certificate for a wrong challenge"
[[ "$(count_certs)" == "$BEFORE" ]] || fail "a wrong challenge issued a certificate ($BEFORE → $(count_certs))"
REFUSED="$(curl -sf "${AUTH[@]}" "$API/api/v1/audit?action=credentials_refused&limit=1000")"
jq -e '[.items[].entry | select(.details.protocol == "scep" and .reason == "wrong challenge password"
        and (.details.names | index("dns:wrong.example.test")))] | length >= 1' <<<"$REFUSED" >/dev/null \
    || fail "the refused challenge is not in rampart's audit: $REFUSED"
[[ "$REFUSED" != *"$WRONG_CHALLENGE"* ]] || fail "rampart's audit keeps the refused challenge itself"
pass "getcert request with a wrong challenge: CA_REJECTED ($(getcert list -s -i wrong | sed -n 's/^[[:space:]]*ca-error: //p' | head -c 120)), nothing issued, the refusal audited without the challenge"

# Renewal as certmonger's auto-renew does it, with the same key (`getcert resubmit`: a
# PKCSReq under the same transactionID, certmonger derives it from the public key, with a new
# CSR (certmonger's subjectKeyIdentifier differs each time) signed by the current
# certificate), then with a new key (`getcert rekey`): each a new certificate.
PUBKEY1="$(openssl pkey -in "$CM/out/host.key" -pubout)"
getcert resubmit -s -i host >"$CM/resubmit.out" 2>&1 || fail "getcert resubmit: $(cat "$CM/resubmit.out")"
await host MONITORING "$SERIAL1" \
    || fail "getcert resubmit (same key) ended $(cm_status host) without a certificate other than $SERIAL1$(cm_report host)"
SERIAL2="$(serial_of "$CRT")"
[[ "$(openssl x509 -in "$CRT" -noout -pubkey)" == "$PUBKEY1" ]] || fail "getcert resubmit changed the key"
openssl verify -CAfile "$CM/ca.root.pem" -untrusted "$CM/ca.issuing.pem" "$CRT" >/dev/null \
    || fail "the resubmitted certificate does not verify against GetCACert's chain"
openssl x509 -in "$CRT" -noout -ext subjectAltName | matches -F 'DNS:host.example.test' || fail "the resubmitted certificate lost DNS:host.example.test"
getcert rekey -s -i host >"$CM/rekey.out" 2>&1 || fail "getcert rekey: $(cat "$CM/rekey.out")"
await host MONITORING "$SERIAL2" || fail "getcert rekey ended $(cm_status host) without a certificate other than $SERIAL2$(cm_report host)"
SERIAL3="$(serial_of "$CRT")"
[[ "$SERIAL3" != "$SERIAL1" ]] || fail "getcert rekey brought back the first certificate"
[[ "$(openssl x509 -in "$CRT" -noout -pubkey)" != "$PUBKEY1" ]] || fail "getcert rekey kept the old key"
[[ "$(openssl x509 -in "$CRT" -noout -pubkey)" == "$(openssl pkey -in "$CM/out/host.key" -pubout)" ]] \
    || fail "the rekeyed certificate is not for the key certmonger holds now"
openssl verify -CAfile "$CM/ca.root.pem" -untrusted "$CM/ca.issuing.pem" "$CRT" >/dev/null \
    || fail "the rekeyed certificate does not verify against GetCACert's chain"
openssl x509 -in "$CRT" -noout -ext subjectAltName | matches -F 'DNS:host.example.test' || fail "the rekeyed certificate lost DNS:host.example.test"
for serial in "$SERIAL2" "$SERIAL3"; do
    curl -sf "${AUTH[@]}" "$API/api/v1/certificates/$serial" | jq -e '.status == "valid"' >/dev/null \
        || fail "renewed certificate $serial is not in rampart's inventory"
done
pass "renewal: getcert resubmit (same key) → serial $SERIAL2, getcert rekey (new key) → serial $SERIAL3, both in the inventory"

stop_certmonger
stop_rampart
