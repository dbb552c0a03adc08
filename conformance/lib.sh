# Shared helpers for conformance scripts (sourced, not run).
# Provides: RAMPART (binary), WORK (temp dir, removed on exit), fail, pass, free_port,
# start_rampart/stop_rampart, wait_http, enroll, acme_lab_config, certbot_venv, webhooks_venv.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RAMPART="${RAMPART:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/rampart}"
WORK="$(mktemp -d)"
RAMPART_PID=""
# Listeners a script does not care about go to ephemeral ports, so scripts never collide
# with each other or with whatever else runs on the machine.
export RAMPART__ACME__LISTEN="${RAMPART__ACME__LISTEN:-127.0.0.1:0}"
export RAMPART__EST__LISTEN="${RAMPART__EST__LISTEN:-127.0.0.1:0}"
export RAMPART__SCEP__LISTEN="${RAMPART__SCEP__LISTEN:-127.0.0.1:0}"
export RAMPART__PUBLISH__LISTEN="${RAMPART__PUBLISH__LISTEN:-127.0.0.1:0}"

cleanup() {
    if [[ -n "$RAMPART_PID" ]]; then kill "$RAMPART_PID" 2>/dev/null || true; fi
    jobs -p | xargs -r kill 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

SCRIPT_NAME="$(basename "$0")"
fail() { echo "FAIL [$SCRIPT_NAME]: $*" >&2; if [[ -f "$WORK/rampart.err" ]]; then tail -20 "$WORK/rampart.err" >&2; fi; exit 1; }
pass() { echo "ok   [$SCRIPT_NAME]: $*"; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

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
