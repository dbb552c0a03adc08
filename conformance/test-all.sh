#!/usr/bin/env bash
# The whole test suite, as README and .ci/run call it: formatting, lints, unit and
# integration tests, then the conformance scripts that drive real clients.
set -euo pipefail
cd "$(dirname "$0")/.."

bash conformance/install-deps.sh

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --all-targets --locked
cargo build --locked --bin rampart

export RAMPART="${CARGO_TARGET_DIR:-$PWD/target}/debug/rampart"
for script in conformance/[a-z]*.sh; do
    case "$script" in conformance/lib.sh | conformance/test-all.sh | conformance/install-deps.sh) continue ;; esac
    echo "== $script"
    bash "$script"
done
echo "all tests passed"
