#!/usr/bin/env bash
# Conformance: the certificate lifecycle as an operator runs it. A webhook receiver built on
# the Standard Webhooks reference library (PyPI `standardwebhooks`) verifies every delivery.
# - an API enrollment with a rampart-generated key, auto_renew and a filesystem delivery
#   target: files written (key 0600), reload command run, openssl verifies the chain;
# - certificate_issued arrives signed, with the SHA-256 thumbprint openssl computes;
# - after a restart the scheduler renews the certificate (its window is open): the target
#   holds the successor and certificate_renewed names the old serial;
# - `rampart certs revoke` → certificate_revoked;
# - events queued while the receiver fails arrive after the daemon is killed with SIGKILL
#   and restarted;
# - events dead-lettered after max_attempts are listed by `rampart webhooks list` and
#   delivered by `rampart webhooks replay --dead-letters`; `rampart audit verify` passes.
source "$(dirname "$0")/lib.sh"
shopt -s extglob # ${serial##+(0)}: openssl prints serials without leading zeros
webhooks_venv

DIR="$WORK/ra"
"$RAMPART" init --dir "$DIR" >"$WORK/init.out" 2>"$WORK/init.err" || fail "rampart init: $(cat "$WORK/init.err")"
KEY="$(grep -o 'rpk_[A-Za-z0-9_-]*' "$WORK/init.out")" || fail "init printed no API key"
export RAMPART_API_KEY="$KEY"
PORT="$(free_port)"
HOOK_PORT="$(free_port)"
API="http://127.0.0.1:$PORT"
export RAMPART_API_URL="$API"
mkdir -p "$WORK/web" "$WORK/hook"
"$RAMPART" webhooks new-secret >"$WORK/hook.whsec"
chmod 600 "$WORK/hook.whsec"
EVENTS="$WORK/hook/events.jsonl"
touch "$EVENTS"
cat >"$WORK/lifecycle.toml" <<EOF
[server]
data_dir = "$DIR"
[api]
listen = "127.0.0.1:$PORT"
[webhooks]
max_attempts = 8
initial_backoff_ms = 200
max_backoff_seconds = 2
[webhooks.endpoints.ops]
url = "http://127.0.0.1:$HOOK_PORT/hook"
secret_file = "$WORK/hook.whsec"
[renewal]
interval_minutes = 60
[delivery.targets.web]
kind = "filesystem"
directory = "$WORK/web"
reload_command = ["sh", "-c", "echo reloaded >> $WORK/reloads.log"]
EOF
# A renew-before window longer than the 1-day lifetime asked for: due as soon as issued.
export RAMPART__TEMPLATES__SERVER__RENEW_BEFORE_DAYS=2

"$WEBHOOK_PYTHON" "$(dirname "$0")/webhook-receiver.py" "$HOOK_PORT" "$WORK/hook.whsec" "$EVENTS" &
start_rampart "$WORK/lifecycle.toml"

wait_event() { # jq filter over one event → waits until some received event matches
    for _ in $(seq 1 150); do
        if jq -s -e "map(select($1)) | length > 0" "$EVENTS" >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    fail "no webhook event matching $1 arrived by $(date +%s.%N); received: $(jq -c '{type, serial: .data.serial, received_at}' "$EVENTS" | tr '\n' ' ')"
}

# 1. Enrollment with a generated key, auto-renewed and delivered.
jq -n '{generate_key: "ecdsa-p256", names: ["app.lab.test"], template: "server",
        validity_days: 1, auto_renew: true, delivery_targets: ["web"]}' >"$WORK/body.json"
STATUS="$(curl -s -o "$WORK/resp.json" -w '%{http_code}' -H "Authorization: Bearer $KEY" \
    -H 'Content-Type: application/json' --data-binary @"$WORK/body.json" "$API/api/v1/enrollments")"
[[ "$STATUS" == 201 ]] || fail "enrollment with generate_key: $STATUS $(cat "$WORK/resp.json")"
FIRST="$(jq -r .serial "$WORK/resp.json")"
[[ "$(jq -r '.deliveries[0].delivered' "$WORK/resp.json")" == true ]] || fail "not delivered: $(cat "$WORK/resp.json")"
[[ "$(stat -c %a "$WORK/web/key.pem")" == 600 ]] || fail "key.pem is not 0600"
openssl verify -CAfile "$DIR/ca-bundle.pem" -untrusted "$WORK/web/chain.pem" "$WORK/web/cert.pem" >/dev/null ||
    fail "the delivered certificate does not verify"
openssl pkey -in "$WORK/web/key.pem" -pubout >"$WORK/key.pub" 2>/dev/null || fail "key.pem is not a private key"
openssl x509 -in "$WORK/web/cert.pem" -noout -pubkey | cmp -s - "$WORK/key.pub" || fail "key.pem does not match cert.pem"
[[ "$(wc -l <"$WORK/reloads.log")" == 1 ]] || fail "the reload command did not run once"
pass "API enrollment with a generated key delivered cert, chain and 0600 key; reload command ran; openssl verifies"

wait_event ".type == \"certificate_issued\" and .data.serial == \"$FIRST\""
THUMB="$(openssl x509 -in "$WORK/web/cert.pem" -noout -fingerprint -sha256 | cut -d= -f2 | tr -d : | tr 'A-F' 'a-f')"
GOT="$(jq -r "select(.data.serial == \"$FIRST\") | .data.thumbprint_sha256" "$EVENTS" | head -1)"
[[ "$GOT" == "$THUMB" ]] || fail "certificate_issued thumbprint $GOT, openssl says $THUMB"
pass "certificate_issued arrived, verified by the standardwebhooks library, with openssl's SHA-256 thumbprint"

# 2. Renewal by the scheduler (it scans at start).
stop_rampart
start_rampart "$WORK/lifecycle.toml"
wait_event ".type == \"certificate_renewed\" and .data.old_serial == \"$FIRST\""
SECOND="$(jq -r "select(.type == \"certificate_renewed\" and .data.old_serial == \"$FIRST\") | .data.serial" "$EVENTS" | head -1)"
DELIVERED="$(openssl x509 -in "$WORK/web/cert.pem" -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f' | sed 's/^0*//')"
[[ "$DELIVERED" == "${SECOND##+(0)}" ]] || fail "the target holds $DELIVERED, not the renewed $SECOND"
[[ "$(wc -l <"$WORK/reloads.log")" == 2 ]] || fail "the reload command did not run after the renewal"
"$RAMPART" certs show "$SECOND" >"$WORK/show.out" || fail "certs show $SECOND"
pass "the scheduler renewed $FIRST as $SECOND, delivered it, reloaded, and sent certificate_renewed"

served() { openssl x509 -in "$WORK/web/cert.pem" -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f' | sed 's/^0*//'; }
"$RAMPART" renewal list --json >"$WORK/managed.json" || fail "renewal list"
[[ "$(jq -r ".[] | select(.serial == \"$FIRST\") | .renewed_by" "$WORK/managed.json")" == "$SECOND" ]] ||
    fail "renewal list does not link $FIRST to $SECOND: $(cat "$WORK/managed.json")"
"$RAMPART" renewal list | matches "$SECOND" || fail "renewal list does not show $SECOND"
"$RAMPART" certs deliver "$FIRST" --target web >/dev/null || fail "certs deliver $FIRST"
[[ "$(served)" == "${FIRST##+(0)}" ]] || fail "certs deliver did not put $FIRST back"
"$RAMPART" certs deliver "$SECOND" --target web >/dev/null || fail "certs deliver $SECOND"
[[ "$(served)" == "${SECOND##+(0)}" && "$(wc -l <"$WORK/reloads.log")" == 4 ]] || fail "certs deliver did not restore $SECOND with a reload"
"$RAMPART" renewal scan >"$WORK/scan.out" || fail "renewal scan"
grep -q "renewed $SECOND -> " "$WORK/scan.out" || fail "renewal scan did not renew the due $SECOND: $(cat "$WORK/scan.out")"
pass "rampart renewal list links old and new, rampart certs deliver rolls a target back and forth, rampart renewal scan renews what is due"

# 3. Revocation from the CLI.
"$RAMPART" certs revoke "$SECOND" --reason keyCompromise >/dev/null || fail "certs revoke"
wait_event ".type == \"certificate_revoked\" and .data.serial == \"$SECOND\" and .data.reason == \"keyCompromise\""
pass "rampart certs revoke → certificate_revoked with its reason"

# 4. Events queued while the receiver fails survive SIGKILL.
issue_generated() { # name → serial
    jq -n --arg n "$1" '{generate_key: "ecdsa-p256", names: [$n], template: "server"}' >"$WORK/body.json"
    curl -s -o "$WORK/resp.json" -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
        --data-binary @"$WORK/body.json" "$API/api/v1/enrollments"
    jq -r .serial "$WORK/resp.json"
}
touch "$WORK/hook/fail"
KILLED=()
for name in k1.lab.test k2.lab.test k3.lab.test; do KILLED+=("$(issue_generated "$name")"); done
sleep 1
kill -KILL "$RAMPART_PID"
wait "$RAMPART_PID" 2>/dev/null || true
RAMPART_PID=""
rm "$WORK/hook/fail"
start_rampart "$WORK/lifecycle.toml"
for serial in "${KILLED[@]}"; do
    wait_event ".type == \"certificate_issued\" and .data.serial == \"$serial\""
done
pass "events queued while the receiver answered 503 arrived after SIGKILL and a restart"

# 5. Dead letters and replay.
touch "$WORK/hook/fail"
DEAD="$(issue_generated dead.lab.test)"
for _ in $(seq 1 100); do
    "$RAMPART" webhooks list --json >"$WORK/list.json" || fail "webhooks list"
    if jq -e '.[0].dead_letters | length > 0' "$WORK/list.json" >/dev/null; then break; fi
    sleep 0.3
done
jq -e '.[0].dead_letters[0].attempts == 8' "$WORK/list.json" >/dev/null || fail "no dead letter after 8 attempts: $(cat "$WORK/list.json")"
"$RAMPART" webhooks list | matches "dead letters: 1" || fail "webhooks list does not show the dead letter"
rm "$WORK/hook/fail"
"$RAMPART" webhooks replay ops --dead-letters | matches "1 event(s) queued" || fail "webhooks replay"
wait_event ".type == \"certificate_issued\" and .data.serial == \"$DEAD\""
"$RAMPART" webhooks list --json | jq -e '.[0].dead_letters == []' >/dev/null || fail "the dead letter is still listed"
pass "a dead-lettered event was listed by rampart webhooks list and delivered by rampart webhooks replay"

[[ ! -s "$EVENTS.bad" ]] || fail "the receiver rejected signatures: $(cat "$EVENTS.bad")"
"$RAMPART" audit verify >/dev/null || fail "rampart audit verify"
IDS="$(jq -r .id "$EVENTS" | sort | uniq | wc -l)"
pass "every delivery carried a valid Standard Webhooks signature ($IDS distinct events); the audit chain verifies"
stop_rampart
