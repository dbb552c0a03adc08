#!/usr/bin/env bash
# Conformance: start-up failures are one-line errors naming the key or file, with a
# non-zero exit — unknown key, wrong type, unreadable file, bad env override, port in use,
# store held by another rampart, missing CA file.
source "$(dirname "$0")/lib.sh"

expect_error() { # description expected-text command...
    local what="$1" expected="$2"
    shift 2
    if "$@" >"$WORK/out" 2>"$WORK/err"; then fail "$what: exited 0"; fi
    local message
    message="$(grep '^error:' "$WORK/err" || true)"
    [[ -n "$message" ]] || fail "$what: no error line in: $(cat "$WORK/err")"
    [[ "$(wc -l <<<"$message")" == 1 ]] || fail "$what: error spans several lines"
    grep -qF -- "$expected" <<<"$message" || fail "$what: '$message' does not mention '$expected'"
    pass "$what → $message"
}

printf '[api]\nlisten = "127.0.0.1:0"\nlisen = "x"\n' >"$WORK/unknown.toml"
expect_error "unknown key" "lisen" "$RAMPART" serve --config "$WORK/unknown.toml"
printf '[api]\nmax_body_bytes = "lots"\n' >"$WORK/type.toml"
expect_error "wrong type" "api.max_body_bytes" "$RAMPART" serve --config "$WORK/type.toml"
expect_error "unreadable file" "$WORK/missing.toml" "$RAMPART" serve --config "$WORK/missing.toml"
expect_error "bad environment override" "RAMPART__API__LISTEN" env RAMPART__API__LISTEN=nowhere "$RAMPART" serve

# A running daemon holds its port and its store.
PORT="$(free_port)"
printf '[server]\ndata_dir = "%s"\n[api]\nlisten = "127.0.0.1:%s"\n' "$WORK/data" "$PORT" >"$WORK/ok.toml"
API="http://127.0.0.1:$PORT"
start_rampart "$WORK/ok.toml"
printf '[server]\ndata_dir = "%s"\n[api]\nlisten = "127.0.0.1:%s"\n' "$WORK/other" "$PORT" >"$WORK/port.toml"
expect_error "port in use" "127.0.0.1:$PORT" "$RAMPART" serve --config "$WORK/port.toml"
printf '[server]\ndata_dir = "%s"\n[api]\nlisten = "127.0.0.1:0"\n' "$WORK/data" >"$WORK/same.toml"
expect_error "store held by another rampart" "in use by another process" "$RAMPART" serve --config "$WORK/same.toml"
stop_rampart

rm "$WORK/data/ca/issuing.key.pem"
expect_error "missing CA file" "issuing.key.pem" "$RAMPART" serve --config "$WORK/ok.toml"
