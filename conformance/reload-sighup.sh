#!/usr/bin/env bash
# Conformance: policy hot reload as an operator does it. The admin role learns a new zone
# in rampart.toml; SIGHUP applies it without a restart; a broken file changes nothing (the
# daemon keeps running on the previous policy and says why); `rampart reload` does the same
# through the API and reports the error; each reload is in the audit log.
source "$(dirname "$0")/lib.sh"

DIR="$WORK/ra"
"$RAMPART" init --dir "$DIR" >"$WORK/init.out" 2>"$WORK/init.err" || fail "rampart init: $(cat "$WORK/init.err")"
KEY="$(grep -o 'rpk_[A-Za-z0-9_-]*' "$WORK/init.out")" || fail "init printed no API key"
export RAMPART_API_KEY="$KEY"
PORT="$(free_port)"
export RAMPART__API__LISTEN="127.0.0.1:$PORT"
API="http://127.0.0.1:$PORT"
export RAMPART_API_URL="$API"
CONF="$DIR/rampart.toml"
start_rampart "$CONF"

issue() { # name → HTTP status
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/$1.key" -subj "/CN=$1" \
        -addext "subjectAltName=DNS:$1" -out "$WORK/$1.csr" 2>/dev/null
    enroll "$WORK/$1.csr" server
}
[[ "$(issue app.corp.example.net)" == 403 ]] || fail "a name outside the policy was issued"

cp "$CONF" "$WORK/good.toml"
# The admin role's first dns_names line gains the corp zone.
sed -i '0,/^dns_names = \["localhost"/s//dns_names = ["**.corp.example.net", "localhost"/' "$CONF"
grep -q 'corp.example.net' "$CONF" || fail "could not edit the configuration"
kill -HUP "$RAMPART_PID"
for _ in $(seq 1 50); do
    [[ "$(issue app.corp.example.net)" == 201 ]] && break
    sleep 0.1
done
[[ "$(issue web.corp.example.net)" == 201 ]] || fail "SIGHUP did not apply the new policy: $(cat "$WORK/resp.json")"
pass "SIGHUP applied a new DNS pattern without a restart"

cp "$CONF" "$WORK/corp.toml"
printf '\n[roles.broken]\ntemplates = ["no-such-template"]\ndns_names = []\nip_ranges = []\nmanage = false\n' >>"$CONF"
kill -HUP "$RAMPART_PID"
for _ in $(seq 1 50); do
    grep -q "running policy stays" "$WORK/rampart.err" && break
    sleep 0.1
done
grep -q "running policy stays" "$WORK/rampart.err" || fail "the daemon did not log the refused reload"
kill -0 "$RAMPART_PID" || fail "the daemon died on a bad configuration"
[[ "$(issue db.corp.example.net)" == 201 ]] || fail "the previous policy did not stay in force"
if "$RAMPART" reload >"$WORK/reload.out" 2>&1; then fail "rampart reload accepted a broken file"; fi
grep -q "no-such-template" "$WORK/reload.out" || fail "rampart reload did not say what is wrong: $(cat "$WORK/reload.out")"
pass "a broken file is refused (SIGHUP logs it, rampart reload reports it); the running policy stays"

cp "$WORK/good.toml" "$CONF"
"$RAMPART" reload | matches "policy reloaded" || fail "rampart reload"
[[ "$(issue mail.corp.example.net)" == 403 ]] || fail "rampart reload did not narrow the policy again"
"$RAMPART" audit list --action policy_reloaded >"$WORK/audit.out" || fail "audit list"
[[ "$(wc -l <"$WORK/audit.out")" == 2 ]] || fail "expected 2 policy_reloaded audit records: $(cat "$WORK/audit.out")"
pass "rampart reload restored the original policy; both reloads are in the audit log"
stop_rampart
