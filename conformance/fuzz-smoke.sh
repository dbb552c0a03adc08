#!/usr/bin/env bash
# Fuzz smoke: builds the cargo-fuzz targets in fuzz/ (stable toolchain, no sanitizer; see
# fuzz/README.md), replays each committed corpus (fuzz/corpus/<target>, every crash found so
# far among it) and fuzzes each target for a short while from it. Any crash, panic, timeout
# or out-of-memory fails the script with libFuzzer's report.
#
# Installs cargo-fuzz (crates.io, `cargo install --locked`) when missing. The fuzz build has
# its own flags, so its own target dir: RAMPART_FUZZ_TARGET_DIR, default
# ~/.cache/rampart-fuzz-target. FUZZ_SECONDS sets the time per target (default 20).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCRIPT_NAME="$(basename "$0")"
SECONDS_PER_TARGET="${FUZZ_SECONDS:-20}"
TARGET_DIR="${RAMPART_FUZZ_TARGET_DIR:-$HOME/.cache/rampart-fuzz-target}"
CARGO_FUZZ_VERSION="0.13.2"
TARGETS=(acme_jws csr scep_pkimessage est_body config)

WORK="$(mktemp -d)"
cleanup() {
    rm -rf "$WORK"
    # The config target's per-process scratch file.
    rm -f /dev/shm/rampart-fuzz-config-*.toml "${TMPDIR:-/tmp}"/rampart-fuzz-config-*.toml
}
trap cleanup EXIT

fail() { echo "FAIL [$SCRIPT_NAME]: $*" >&2; exit 1; }
pass() { echo "ok   [$SCRIPT_NAME]: $*"; }

# The main build's target dir and settings must not leak into the fuzz build, nor the
# daemon's environment overrides into the config target.
unset CARGO_TARGET_DIR
while read -r var; do unset "$var"; done < <(compgen -e | grep '^RAMPART__' || true)

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi

cd "$ROOT/fuzz"
# `-s none`: no sanitizer, so no nightly-only -Z flag; everything else cargo-fuzz passes
# (SanitizerCoverage, -Cdebug-assertions, overflow checks) is stable.
fuzz() { cargo fuzz "$1" -s none --target-dir "$TARGET_DIR" "${@:2}"; }

start=$SECONDS
fuzz build >"$WORK/build.log" 2>&1 || {
    tail -40 "$WORK/build.log" >&2
    fail "cargo fuzz build"
}
pass "built ${#TARGETS[@]} fuzz targets in $((SECONDS - start))s"

for target in "${TARGETS[@]}"; do
    corpus="corpus/$target"
    [[ -d "$corpus" ]] || fail "$target: no committed corpus at fuzz/$corpus"
    inputs="$(find "$corpus" -type f | wc -l)"
    # Replay: every committed input once.
    if ! fuzz run "$target" "$corpus" -- -runs=0 -timeout=10 \
        >"$WORK/$target.replay.log" 2>&1; then
        tail -40 "$WORK/$target.replay.log" >&2
        fail "$target: replaying the committed corpus"
    fi
    grep -q "DONE" "$WORK/$target.replay.log" ||
        fail "$target: the replay did not finish: $(tail -5 "$WORK/$target.replay.log")"
    # Fuzz: new inputs go to a scratch directory, never into the committed corpus.
    mkdir -p "$WORK/$target" "$WORK/artifacts/$target"
    if ! fuzz run "$target" "$WORK/$target" "$corpus" -- \
        -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$WORK/artifacts/$target/" \
        >"$WORK/$target.fuzz.log" 2>&1; then
        tail -60 "$WORK/$target.fuzz.log" >&2
        for artifact in "$WORK/artifacts/$target"/*; do
            [[ -f "$artifact" ]] || continue
            echo "reproducer ($(basename "$artifact")), base64:" >&2
            base64 -w0 "$artifact" >&2
            echo >&2
        done
        fail "$target: fuzzing found a failure (add the reproducer to fuzz/corpus/$target)"
    fi
    runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$WORK/$target.fuzz.log")"
    cov="$(grep -o 'cov: [0-9]*' "$WORK/$target.fuzz.log" | tail -1)"
    pass "$target: $inputs corpus inputs replayed; ${runs:-?} runs in ${SECONDS_PER_TARGET}s, $cov, no crash"
done
pass "fuzz smoke done in $((SECONDS - start))s"
