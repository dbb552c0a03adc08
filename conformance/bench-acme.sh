#!/usr/bin/env bash
# Conformance (smoke): `rampart bench acme` drives full orders with real http-01 validation
# against a running rampart and reports them. Checks the tool works end to end — every
# order completes and the RESULT line is there — never how fast (figures go in the notes).
source "$(dirname "$0")/lib.sh"

HTTP01_PORT="$(free_port)"
DNS_PORT="$(free_port)"
acme_lab_config "http01_port = $HTTP01_PORT
dns_resolver = \"127.0.0.1:$DNS_PORT\""
start_rampart "$DIR/rampart.toml"

"$RAMPART" bench acme --target "$DIRECTORY" --ca-bundle "$DIR/ca-bundle.pem" \
    --concurrency 4 --count 40 --http01-listen "127.0.0.1:$HTTP01_PORT" --dns-listen "127.0.0.1:$DNS_PORT" \
    --server-pid "$RAMPART_PID" >"$WORK/bench.out" 2>&1 || fail "bench failed: $(tail -5 "$WORK/bench.out")"
RESULT="$(grep '^RESULT ' "$WORK/bench.out")" || fail "no RESULT line: $(cat "$WORK/bench.out")"
grep -q "completed=40 failed=0" <<<"$RESULT" || fail "unexpected result: $RESULT"
grep -q "server_cpu_ms_per_op=" <<<"$RESULT" || fail "no server CPU figure: $RESULT"
KEY="$(grep -o 'rpk_[A-Za-z0-9_-]*' "$WORK/rampart.out")"
ISSUED="$(ADMIN_KEY="$KEY" issued_for bench.test)"
[[ "$ISSUED" == 40 ]] || fail "the inventory holds $ISSUED bench certificates, not 40"
stop_rampart
pass "rampart bench acme: 40 full orders with real http-01 validation, all recorded ($RESULT)"
