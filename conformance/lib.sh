# Shared helpers for conformance scripts (sourced, not run).
# Provides: RAMPART (binary), WORK (temp dir, removed on exit), fail, pass, free_port,
# start_rampart/stop_rampart, wait_http, enroll, inventory, verify_issued, acme_lab_config,
# scep_lab <challenge> [toml] — start rampart with a SCEP listener whose profile `default`
# (template client, identity scep-default, admin, legacy algorithms allowed) takes the static
# <challenge>, stored hashed; [toml] adds to the config (more profiles). Sets DIR, API, SCEP
# (the default profile's URL), KEY (the admin API key serve printed) and AUTH (curl's header).
scep_lab() {
    DIR="$WORK/ra"
    local api_port scep_port hash
    api_port="$(free_port)"
    scep_port="$(free_port)"
    mkdir -p "$DIR"
    hash="$(printf '%s' "$1" | "$RAMPART" hash-password)" || fail "hash-password"
    cat >"$DIR/rampart.toml" <<TOML
[server]
data_dir = "$DIR"
[api]
listen = "127.0.0.1:$api_port"
[scep.profiles.default]
template = "client"
identity = "scep-default"
roles = ["admin"]
challenge_hash = "$hash"
legacy_algorithms = true
${2:-}
TOML
    grep -qF "\"$1\"" "$DIR/rampart.toml" && fail "the challenge itself ended up in the config"
    API="http://127.0.0.1:$api_port"
    # Exported (lib.sh's default is port 0): a restart of the daemon keeps the listener.
    export RAMPART__SCEP__LISTEN="127.0.0.1:$scep_port"
    start_rampart "$DIR/rampart.toml"
    SCEP="http://127.0.0.1:$scep_port/scep"
    grep "SCEP" "$WORK/rampart.out" | matches "$SCEP" || fail "serve did not print the SCEP URL"
    KEY="$(grep -o 'rpk_[A-Za-z0-9_-]*' "$WORK/rampart.out")" || fail "serve printed no API key"
    AUTH=(-H "Authorization: Bearer $KEY")
}

# split_pems <pem-bundle> <prefix> — each certificate of the bundle to <prefix>.<n>.pem
# (n from 1).
split_pems() {
    awk -v p="$2." '/BEGIN CERTIFICATE/ {n++; on=1} on {print > (p n ".pem")} /END CERTIFICATE/ {on=0}' "$1"
}

# scep_ca_certs <pem-bundle> <prefix> — SCEP's GetCACert certificates (as PEM) into
# <prefix>.ra.pem (the RSA certificate), <prefix>.root.pem (self-signed) and
# <prefix>.issuing.pem; prints how many certificates the bundle held.
scep_ca_certs() {
    local pem
    split_pems "$1" "$2"
    for pem in "$2".[0-9]*.pem; do
        if openssl x509 -in "$pem" -noout -text | matches 'Public Key Algorithm: rsaEncryption'; then
            cp "$pem" "$2.ra.pem"
        elif [[ "$(openssl x509 -in "$pem" -noout -subject -nameopt RFC2253 | cut -d= -f2-)" \
            == "$(openssl x509 -in "$pem" -noout -issuer -nameopt RFC2253 | cut -d= -f2-)" ]]; then
            cp "$pem" "$2.root.pem"
        else
            cp "$pem" "$2.issuing.pem"
        fi
    done
    [[ -f "$2.ra.pem" && -f "$2.root.pem" && -f "$2.issuing.pem" ]] \
        || fail "GetCACert: no RSA RA certificate, self-signed root and issuing CA in $(grep '^subject' "$1" | tr '\n' ' ')"
    grep -c 'BEGIN CERTIFICATE' "$1"
}

# count_certs — how many certificates the API ($API, $AUTH) lists (up to 500).
count_certs() {
    local n
    n="$(curl -sf "${AUTH[@]}" "$API/api/v1/certificates?limit=500" | jq '.items | length')" || fail "listing certificates"
    [[ "$n" =~ ^[0-9]+$ ]] || fail "listing certificates gave $n"
    echo "$n"
}

# acme_eab_profile <name> — the TOML of an ACME profile <name> (template server) that
# lets no one in without external account binding (no anonymous role), with no terms,
# website or CAA identities; for acme_lab_config's extra lines.
acme_eab_profile() {
    printf '[acme.profiles.%s]\ntemplate = "server"\ncertificate_profiles = []\nanonymous_role = ""\nterms_of_service = ""\nwebsite = ""\ncaa_identities = []\n' "$1"
}

# split_chain <pem> — the first certificate to <pem>.leaf, the rest to <pem>.chain.
split_chain() {
    awk -v leaf="$1.leaf" -v chain="$1.chain" '
        /-----BEGIN CERTIFICATE-----/ { n++ }
        n == 1 { print > leaf } n > 1 { print > chain }' "$1"
    [[ -s "$1.leaf" && -s "$1.chain" ]] || fail "$1 does not hold a certificate and its chain"
}

# issued_for <name> — how many certificates the inventory ($API, $ADMIN_KEY) holds for <name>.
issued_for() {
    curl -sf -H "Authorization: Bearer $ADMIN_KEY" "$API/api/v1/certificates?san=$1&limit=500" | jq '.items | length'
}

# certbot_venv, webhooks_venv, start_knot/stop_knotd, start_pebble.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RAMPART="${RAMPART:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/rampart}"
WORK="$(mktemp -d)"
RAMPART_PID=""
KNOTD_PID=""
# Listeners a script does not care about go to ephemeral ports, so scripts never collide
# with each other or with whatever else runs on the machine.
export RAMPART__ACME__LISTEN="${RAMPART__ACME__LISTEN:-127.0.0.1:0}"
export RAMPART__EST__LISTEN="${RAMPART__EST__LISTEN:-127.0.0.1:0}"
export RAMPART__SCEP__LISTEN="${RAMPART__SCEP__LISTEN:-127.0.0.1:0}"
export RAMPART__PUBLISH__LISTEN="${RAMPART__PUBLISH__LISTEN:-127.0.0.1:0}"

cleanup() {
    if [[ -n "$RAMPART_PID" ]]; then kill "$RAMPART_PID" 2>/dev/null || true; fi
    stop_knotd
    jobs -p | xargs -r kill 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

SCRIPT_NAME="$(basename "$0")"
fail() { echo "FAIL [$SCRIPT_NAME]: $*" >&2; if [[ -f "$WORK/rampart.err" ]]; then tail -20 "$WORK/rampart.err" >&2; fi; exit 1; }
pass() { echo "ok   [$SCRIPT_NAME]: $*"; }
# `cmd | matches PATTERN`: grep that reads all of its input. `grep -q` exits at the first
# match, and under pipefail the writer's SIGPIPE (or EPIPE) then fails the pipeline.
matches() { grep "$@" >/dev/null; }

# free_port — a loopback port free now and not handed out before in this script (the kernel
# may offer a port again once the probe socket is closed, before anyone listens on it).
free_port() {
    local port
    while :; do
        port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
        grep -qx "$port" "$WORK/.ports-handed-out" 2>/dev/null || break
    done
    echo "$port" >>"$WORK/.ports-handed-out"
    echo "$port"
}

wait_http() { # url
    for _ in $(seq 1 100); do
        if curl -sk -o /dev/null "$1"; then return 0; fi
        sleep 0.1
    done
    fail "nothing answers at $1"
}

# start_rampart <config> — runs `rampart serve`, stdout in $WORK/rampart.out
start_rampart() { # honours RAMPART__* variables set on the call
    "$RAMPART" serve --config "$1" >"$WORK/rampart.out" 2>"$WORK/rampart.err" &
    RAMPART_PID=$!
    wait_http "$API/healthz"
}

stop_rampart() {
    kill -TERM "$RAMPART_PID"
    wait "$RAMPART_PID" || fail "rampart did not exit cleanly on SIGTERM"
    RAMPART_PID=""
}

# enroll <csr-file> <template> — POST to $API with $KEY; body in $WORK/resp.json, prints the status
enroll() {
    jq -n --rawfile csr "$1" --arg t "$2" '{csr: $csr, template: $t}' >"$WORK/body.json"
    curl -s -o "$WORK/resp.json" -w '%{http_code}' -H "Authorization: Bearer $KEY" \
        -H 'Content-Type: application/json' --data-binary @"$WORK/body.json" "$API/api/v1/enrollments"
}

# inventory <serial> — "status reason owner" of a certificate from the API ($API, with the
# admin key in $ADMIN_KEY); reason is "-" when not revoked.
inventory() {
    curl -sf -H "Authorization: Bearer $ADMIN_KEY" "$API/api/v1/certificates/$1" \
        | jq -r '[.status, (.revocation.reason // "-"), .owner] | join(" ")'
}

# verify_issued <cert> <chain> <SAN…> — <cert> verifies against the CA bundle ($DIR) with the
# intermediates in <chain>, and names every SAN given (e.g. DNS:x, IP Address:y); prints its
# serial in lower-case hex.
verify_issued() {
    local crt="$1" chain="$2" san
    shift 2
    [[ -s "$crt" && -s "$chain" ]] || fail "no certificate or chain at $crt"
    openssl verify -CAfile "$DIR/ca-bundle.pem" -untrusted "$chain" "$crt" >/dev/null \
        || fail "$crt does not verify: $(openssl verify -CAfile "$DIR/ca-bundle.pem" -untrusted "$chain" "$crt" 2>&1)"
    for san in "$@"; do
        openssl x509 -in "$crt" -noout -ext subjectAltName | matches -F "$san" || fail "$crt does not name $san"
    done
    openssl x509 -in "$crt" -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f'
}

# acme_lab_config <extra [acme] TOML lines> — a rampart config in $WORK/ra for an ACME test:
# data in $WORK/ra, API and ACME on free loopback ports (sets DIR, API, ACME_PORT, DIRECTORY
# and exports RAMPART__ACME__LISTEN), private validation targets allowed.
acme_lab_config() {
    DIR="$WORK/ra"
    local api_port
    api_port="$(free_port)"
    ACME_PORT="$(free_port)"
    mkdir -p "$DIR"
    printf '[server]\ndata_dir = "%s"\n[api]\nlisten = "127.0.0.1:%s"\n[acme]\nallow_private_targets = true\n%s\n' \
        "$DIR" "$api_port" "$1" >"$DIR/rampart.toml"
    API="http://127.0.0.1:$api_port"
    export RAMPART__ACME__LISTEN="127.0.0.1:$ACME_PORT"
    DIRECTORY="https://localhost:$ACME_PORT/acme/default/directory"
}

# certbot_venv — certbot and its RFC 2136 plugin from PyPI in a cached venv; sets CERTBOT.
certbot_venv() {
    local venv="${CERTBOT_VENV:-$HOME/.cache/rampart-certbot}"
    if [[ ! -x "$venv/bin/certbot" ]] || ! "$venv/bin/python" -c 'import certbot_dns_rfc2136' 2>/dev/null; then
        [[ -x "$venv/bin/pip" ]] || python3 -m venv "$venv"
        "$venv/bin/pip" install -q certbot certbot-dns-rfc2136
    fi
    CERTBOT="$venv/bin/certbot"
}

# webhooks_venv — the Standard Webhooks reference library from PyPI in a cached venv; sets
# WEBHOOK_PYTHON.
webhooks_venv() {
    local venv="${WEBHOOKS_VENV:-$HOME/.cache/rampart-webhooks}"
    if ! "$venv/bin/python" -c 'import standardwebhooks' 2>/dev/null; then
        [[ -x "$venv/bin/pip" ]] || python3 -m venv "$venv"
        "$venv/bin/pip" install -q standardwebhooks
    fi
    WEBHOOK_PYTHON="$venv/bin/python"
}

# start_knot <zone> [records] — Knot DNS, authoritative for <zone> (apex A 127.0.0.1, plus
# the zone-file lines in [records]), on a free loopback port, accepting dynamic updates
# signed with a fresh TSIG key (hmac-sha256).
# Sets KNOT (its directory), DNS_PORT, TSIG_NAME, TSIG_SECRET, KNOTD_PID, KDIG (an array:
# kdig at that server) and ZONE; soa_serial prints the zone's serial.
start_knot() {
    ZONE="$1"
    PATH="$PATH:/usr/sbin" # Debian puts knotd and keymgr there
    local tool
    for tool in knotd keymgr kdig; do
        command -v "$tool" >/dev/null 2>&1 \
            || fail "$tool not found: install the Debian packages knot and knot-dnsutils (.ci/run does)"
    done
    KNOT="$WORK/knot"
    DNS_PORT="$(free_port)"
    TSIG_NAME="rampart-test"
    mkdir -p "$KNOT/db" "$KNOT/run"
    TSIG_SECRET="$(keymgr -t "$TSIG_NAME" hmac-sha256 | sed -n 's/^ *secret: *//p')"
    [[ -n "$TSIG_SECRET" ]] || fail "keymgr -t did not generate a TSIG secret"
    cat >"$KNOT/$ZONE.zone" <<ZONEFILE
\$ORIGIN $ZONE.
\$TTL 60
@   SOA ns.$ZONE. hostmaster.$ZONE. 1 3600 600 86400 60
@   NS  ns
ns  A   127.0.0.1
@   A   127.0.0.1
${2:-}
ZONEFILE
    cat >"$KNOT/knot.conf" <<CONF
server:
    rundir: "$KNOT/run"
    pidfile: "$KNOT/run/knot.pid"
    listen: 127.0.0.1@$DNS_PORT
database:
    storage: "$KNOT/db"
log:
  - target: "$KNOT/knot.log"
    any: info
key:
  - id: $TSIG_NAME
    algorithm: hmac-sha256
    secret: $TSIG_SECRET
acl:
  - id: tsig-update
    address: 127.0.0.1
    key: $TSIG_NAME
    action: update
zone:
  - domain: $ZONE
    storage: "$KNOT"
    file: "$ZONE.zone"
    acl: tsig-update
CONF
    knotd --config "$KNOT/knot.conf" >"$KNOT/knotd.out" 2>&1 &
    KNOTD_PID=$!
    KDIG=(kdig @127.0.0.1 -p "$DNS_PORT" +time=1 +retry=0)
    local _
    for _ in $(seq 1 50); do
        [[ "$(soa_serial 2>/dev/null)" == 1 ]] && break
        kill -0 "$KNOTD_PID" 2>/dev/null || fail "knotd exited: $(tail -20 "$KNOT/knotd.out" "$KNOT/knot.log" 2>/dev/null)"
        sleep 0.1
    done
    [[ "$(soa_serial)" == 1 ]] || fail "knotd does not answer for $ZONE on 127.0.0.1:$DNS_PORT: $(tail -20 "$KNOT/knot.log" 2>/dev/null)"
    [[ "$("${KDIG[@]}" +short "$ZONE" A)" == 127.0.0.1 ]] || fail "knotd does not serve the $ZONE A record"
}

soa_serial() { "${KDIG[@]}" +short "$ZONE" SOA | awk '{print $3}'; }

# stop_knotd — SIGTERM knotd and wait for it (it writes its timer DB under $WORK on the way
# out, so before cleanup removes $WORK); fails when it does not exit cleanly.
stop_knotd() {
    if [[ -n "$KNOTD_PID" ]]; then
        local pid="$KNOTD_PID"
        KNOTD_PID=""
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || return 1
    fi
}

# start_pebble <dns-port> <http01-port> — Debian's pebble (Let's Encrypt's test ACME CA) on
# loopback, resolving names at 127.0.0.1:<dns-port> and validating http-01 on <http01-port>,
# without pebble's artificial validation delay, random nonce rejection or authorization
# reuse. Its HTTPS certificate comes from a CA made here. Sets PEBBLE_PORT, PEBBLE_MGMT_PORT,
# PEBBLE_PID, PEBBLE_TLS_CA (the PEM clients trust) and PCURL (curl trusting it).
start_pebble() {
    command -v pebble >/dev/null 2>&1 || fail "pebble not found: install the Debian package pebble (.ci/run does)"
    PEBBLE_TLS_CA="$WORK/pebble-tls-ca.pem"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/pebble-tls-ca.key" \
        -subj "/CN=pebble TLS test CA" -days 2 -out "$PEBBLE_TLS_CA" 2>/dev/null
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/pebble-tls.key" \
        -subj "/CN=localhost" -out "$WORK/pebble-tls.csr" 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$WORK/pebble-tls.ext"
    openssl x509 -req -in "$WORK/pebble-tls.csr" -CA "$PEBBLE_TLS_CA" -CAkey "$WORK/pebble-tls-ca.key" \
        -CAcreateserial -days 2 -extfile "$WORK/pebble-tls.ext" -out "$WORK/pebble-tls.pem" 2>/dev/null \
        || fail "making pebble's TLS certificate"
    PEBBLE_PORT="$(free_port)"
    PEBBLE_MGMT_PORT="$(free_port)"
    cat >"$WORK/pebble.json" <<JSON
{"pebble": {"listenAddress": "127.0.0.1:$PEBBLE_PORT", "managementListenAddress": "127.0.0.1:$PEBBLE_MGMT_PORT",
  "certificate": "$WORK/pebble-tls.pem", "privateKey": "$WORK/pebble-tls.key",
  "httpPort": $2, "tlsPort": $(free_port), "ocspResponderURL": "",
  "externalAccountBindingRequired": false}}
JSON
    PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 PEBBLE_AUTHZREUSE=0 \
        pebble -config "$WORK/pebble.json" -dnsserver "127.0.0.1:$1" >"$WORK/pebble.log" 2>&1 &
    PEBBLE_PID=$!
    PCURL=(curl -s --cacert "$PEBBLE_TLS_CA")
    local _
    for _ in $(seq 1 100); do
        "${PCURL[@]}" -o /dev/null "https://localhost:$PEBBLE_PORT/dir" && return 0
        kill -0 "$PEBBLE_PID" 2>/dev/null || fail "pebble exited: $(tail -20 "$WORK/pebble.log")"
        sleep 0.1
    done
    fail "pebble does not answer at https://localhost:$PEBBLE_PORT/dir: $(tail -20 "$WORK/pebble.log")"
}
