#!/usr/bin/env bash
# Runs every cargo-fuzz target of leak-protocol for a fixed time each.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# SECONDS is the time per target (default 60); with TARGETs, only those run.
# Needs the nightly toolchain and cargo-fuzz, and installs them if missing.
# Corpora grow in protocol/fuzz/corpus/TARGET (not committed); the committed
# seeds in protocol/fuzz/seeds/TARGET are read too. A crash leaves its input
# in protocol/fuzz/artifacts/TARGET and makes this script exit non-zero.
#
# FUZZ_SANITIZER picks cargo-fuzz's sanitizer (default address; "none" runs
# the crypto-heavy targets about three times faster).
set -euo pipefail

secs="${1:-60}"
if ! [[ "$secs" =~ ^[0-9]+$ ]] || [ "$secs" -eq 0 ]; then
    echo "usage: $0 [SECONDS] [TARGET...]  (SECONDS a positive integer, got '$secs')" >&2
    exit 2
fi
shift || true

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
protocol="$root/protocol"
fuzz="$protocol/fuzz"
logs="$fuzz/target/fuzz-logs"
sanitizer="${FUZZ_SANITIZER:-address}"

if ! rustup toolchain list | grep -q '^nightly'; then
    echo "==> installing the nightly toolchain"
    rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

cd "$protocol"
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi
if [ "${#targets[@]}" -eq 0 ]; then
    echo "no fuzz targets found" >&2
    exit 1
fi

echo "==> building ${#targets[@]} fuzz targets"
cargo +nightly fuzz build --sanitizer "$sanitizer"

mkdir -p "$logs"
results=()
failed=0
for target in "${targets[@]}"; do
    corpus="$fuzz/corpus/$target"
    mkdir -p "$corpus"
    dirs=("$corpus")
    if [ -d "$fuzz/seeds/$target" ]; then
        dirs+=("$fuzz/seeds/$target")
    fi
    log="$logs/$target.log"
    echo "==> fuzzing $target for ${secs}s (log: ${log#"$root"/})"
    start=$(date +%s)
    if cargo +nightly fuzz run --sanitizer "$sanitizer" "$target" "${dirs[@]}" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 >"$log" 2>&1; then
        result="ok"
        grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true
    else
        failed=1
        artifact=$(grep -o 'Test unit written to [^ ]*' "$log" | tail -n 1 | cut -d' ' -f5 || true)
        result="FAILED${artifact:+ (${artifact#"$root"/})}"
        echo "---- last lines of $log ----"
        tail -n 60 "$log"
    fi
    elapsed=$(($(date +%s) - start))
    runs=$(grep -o 'Done [0-9]* runs' "$log" | tail -n 1 | cut -d' ' -f2 || true)
    results+=("$(printf '%-16s %8s %12s  %s' "$target" "$elapsed" "${runs:--}" "$result")")
done

echo
printf '%-16s %8s %12s  %s\n' "target" "seconds" "runs" "result"
printf '%-16s %8s %12s  %s\n' "------" "-------" "----" "------"
printf '%s\n' "${results[@]}"
exit "$failed"
