#!/usr/bin/env bash
# Runs every check and every test of the workspace: formatting, clippy, and
# all tests (cargo-nextest when installed, else cargo test; doctests too).
# On a fresh machine it installs what the tests need first (as root).
# Usage: scripts/test.sh            (CI=true makes installs non-interactive)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

# A CI run builds once from nothing: incremental compilation's caches
# (gigabytes for thirty test binaries) would only fill its disk.
if [ "${CI:-}" = true ]; then
    export CARGO_INCREMENTAL=0
fi

# --- What the tests need -------------------------------------------------------
# rustfmt and clippy come with the toolchain; make sure they are there.
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    log "installing rustfmt and clippy"
    rustup component add rustfmt clippy
fi
# openssl makes the RSA key of the DKIM test.
scripts/lib/install-deps.sh openssl:openssl tcpdump:tcpdump ss:iproute2 python3-venv python3-cryptography

# --- Static checks -------------------------------------------------------------
log "cargo fmt --check"
cargo fmt --all --check

log "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "module structure: no import cycles between modules, no file over 800 lines"
python3 scripts/lib/module_cycles.py node/src node/net/src client/src protocol/src tests/src

log "packet vectors re-derived from SPEC.md alone, in Python (protocol/testvectors/check_vectors.py)"
# A second implementation written from the specification: BLAKE3 from PyPI
# (no Debian package), the rest from python3-cryptography.
spec_venv=target/spec-check-venv
if ! "$spec_venv/bin/python" -c 'import blake3, cryptography' >/dev/null 2>&1; then
    python3 -m venv --system-site-packages "$spec_venv"
    "$spec_venv/bin/pip" install --quiet --disable-pip-version-check "blake3==1.0.5"
fi
"$spec_venv/bin/python" protocol/testvectors/check_vectors.py

# --- Tests ---------------------------------------------------------------------
# tests/tests/processes.rs runs the leak-node binary, which Cargo does not build
# for another package's tests: build every binary first.
log "cargo build --workspace --bins"
cargo build --workspace --bins --locked

if cargo nextest --version >/dev/null 2>&1; then
    # Doctests first (nextest does not run them), so the run ends with
    # nextest's summary of every test.
    log "cargo test --doc --workspace"
    cargo test --doc --workspace --locked
    log "cargo nextest run --workspace"
    cargo nextest run --workspace --locked --no-fail-fast
else
    log "cargo test --workspace (cargo-nextest not found)"
    cargo test --workspace --locked --no-fail-fast
fi
