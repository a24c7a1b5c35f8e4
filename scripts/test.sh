#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run calls this script).
# Formatting and lints, the Rust unit and end-to-end tests against the real
# binary, the official Dapr Python SDK tests, and a short run of the benches.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*"; }

step "services the tests use (Redis, PostgreSQL, RabbitMQ, NATS, Mosquitto; etcd installed)"
scripts/services.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test (unit + end-to-end against the real binary)"
# Plain gRPC apps in the transparent-mode tests are grpcio, from the venv.
TANDEM_SDK_VENV="$(tests/sdk/venv.sh)"
export TANDEM_SDK_VENV
# The dashboard's browser test: Debian's Chromium and playwright-core.
TANDEM_PLAYWRIGHT="$(tests/dashboard/setup.sh)"
export TANDEM_PLAYWRIGHT
cargo test --workspace

step "Dapr Python SDK tests"
cargo build --bin tandem
tests/sdk/run.sh

step "benches compile and run briefly (numbers come from cargo bench)"
cargo test --benches

printf '\nall tests passed\n'
