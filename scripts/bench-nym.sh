#!/usr/bin/env bash
# Leak's hop processing next to Nym's `sphinx-packet` 0.8.0, in one
# criterion run on this machine (protocol/bench-nym/benches/hop.rs), both
# at Leak's payload size (3,566 bytes) with a 3,000-byte message; then a
# table of the medians and of the ratios issue 13 sets as targets:
#   a Leak hop <= 1.5 x Leak's own X25519 exchange
#   a Leak hop <= 0.5 x a Nym hop at the same payload size
#
# protocol/bench-nym is a workspace of its own, so Nym's crate and its
# dependencies are built only here, never by the project's builds and
# tests; it builds into the project's target directory.
#
# Usage: scripts/bench-nym.sh [criterion args...]
#   e.g. scripts/bench-nym.sh --warm-up-time 2 --measurement-time 6
# Set BENCH_STRICT=1 to exit with status 1 when a target is missed (medians
# are noisy on a busy machine).
set -euo pipefail
cd "$(dirname "$0")/.."

target_dir=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
started=$(date +%s)
CARGO_TARGET_DIR="$target_dir" cargo bench --manifest-path protocol/bench-nym/Cargo.toml --bench hop -- "$@"

python3 - "$target_dir/criterion/hop" "$started" <<'PY'
import json, os, sys

root, started = sys.argv[1], int(sys.argv[2])
rows = [
    ("leak_x25519", "Leak: one X25519 exchange"),
    ("leak_payload_layer", "Leak: one LIONESS payload layer (3,566 bytes)"),
    ("leak_relay_hop", "Leak: process a relay hop"),
    ("leak_exit_hop", "Leak: process the exit hop (with its zero check)"),
    ("nym_relay_hop", "Nym sphinx-packet 0.8.0: process a hop"),
    ("nym_x25519", "x25519-dalek ladder (Nym's X25519)"),
]
median, stale = {}, set()
for name, _ in rows:
    path = os.path.join(root, name, "new", "estimates.json")
    try:
        with open(path) as f:
            median[name] = json.load(f)["median"]["point_estimate"] / 1000.0
        if os.path.getmtime(path) < started:
            stale.add(name)
    except (OSError, KeyError, ValueError):
        pass

print()
print("| benchmark | median | × Leak X25519 | × Nym hop |")
print("|---|---|---|---|")
x, nym = median.get("leak_x25519"), median.get("nym_relay_hop")
for name, label in rows:
    if name not in median:
        print(f"| {label} | not measured | | |")
        continue
    m = median[name]
    rx = f"{m / x:.2f}" if x else ""
    rn = f"{m / nym:.2f}" if nym else ""
    mark = " (stale)" if name in stale else ""
    print(f"| {label} | {m:.1f} µs{mark} | {rx} | {rn} |")

missed = False
print()
for hop in ("leak_relay_hop", "leak_exit_hop"):
    if hop not in median or not x or not nym:
        continue
    to_x, to_nym = median[hop] / x, median[hop] / nym
    ok_x, ok_nym = to_x <= 1.5, to_nym <= 0.5
    missed |= not (ok_x and ok_nym)
    print(
        f"{hop}: {to_x:.2f} × X25519 (target ≤ 1.5: {'met' if ok_x else 'MISSED'}), "
        f"{to_nym:.2f} × Nym (target ≤ 0.5: {'met' if ok_nym else 'MISSED'})"
    )
if missed and os.environ.get("BENCH_STRICT") == "1":
    sys.exit(1)
PY
